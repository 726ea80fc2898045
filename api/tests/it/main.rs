//! Integration tests for caracal-api: the committed CRDs are current, and
//! objects are accepted or refused by the generated schemas and CEL rules as
//! an API server would.

mod crds_current;
mod schema_check;
mod validation;
