//! End-to-end tests live in `tests/it/`: they start the real `caracal`
//! binary, a fake provider (`py/fake_upstream.py`) and the official Python
//! SDKs (`py/sdk_call.py`) as separate processes on loopback. Tests that need
//! a Kubernetes cluster run only when `KUBECONFIG` is set. This crate has no
//! library code of its own.
