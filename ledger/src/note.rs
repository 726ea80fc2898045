//! Checkpoints as C2SP signed notes.
//!
//! A checkpoint body is three lines: the log's origin, the tree size in
//! decimal, and the root hash in standard base64, each ending in `\n`. The
//! note is the body, one empty line, and one signature line per signer:
//! `— <key name> <base64(key id || DER ECDSA signature)>\n` (the dash is
//! U+2014). The signature covers the body bytes exactly.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use crate::hash::{Hash, hash_from_slice};
use crate::keys::{KeyPair, PublicKey};

const SIGNATURE_PREFIX: &str = "\u{2014} ";

/// Why a note or checkpoint was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoteError {
    #[error("note is malformed: {0}")]
    Malformed(String),
    #[error("checkpoint body is malformed: {0}")]
    BadBody(String),
    #[error("signature by {name} (key id {key_id}) does not verify")]
    BadSignature { name: String, key_id: String },
    #[error("no signature by a known key (signers: {0})")]
    NoKnownSigner(String),
    #[error("checkpoint origin is {found:?}, expected {expected:?}")]
    WrongOrigin { found: String, expected: String },
}

/// What a checkpoint commits to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    pub origin: String,
    pub size: u64,
    pub root: Hash,
}

impl Checkpoint {
    /// The exact bytes that are signed.
    pub fn body(&self) -> String {
        format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            STANDARD.encode(self.root)
        )
    }

    /// The complete signed note text.
    pub fn sign(&self, key: &KeyPair) -> String {
        let body = self.body();
        let mut blob = key.key_id().to_vec();
        blob.extend_from_slice(&key.sign(body.as_bytes()));
        format!(
            "{body}\n{SIGNATURE_PREFIX}{} {}\n",
            key.name(),
            STANDARD.encode(blob)
        )
    }

    fn parse_body(body: &str) -> Result<Self, NoteError> {
        let bad = |why: &str| NoteError::BadBody(why.to_string());
        let lines: Vec<&str> = body
            .strip_suffix('\n')
            .ok_or_else(|| bad("no final newline"))?
            .split('\n')
            .collect();
        let [origin, size, root, ..] = lines.as_slice() else {
            return Err(bad("fewer than three lines"));
        };
        if origin.is_empty() {
            return Err(bad("empty origin"));
        }
        if size.is_empty()
            || !size.bytes().all(|b| b.is_ascii_digit())
            || (size.len() > 1 && size.starts_with('0'))
        {
            return Err(bad("size is not a canonical decimal number"));
        }
        let size = size
            .parse()
            .map_err(|_| bad("size does not fit in 64 bits"))?;
        let root = STANDARD
            .decode(root)
            .ok()
            .and_then(|r| hash_from_slice(&r))
            .ok_or_else(|| bad("root is not 32 bytes of base64"))?;
        Ok(Self {
            origin: origin.to_string(),
            size,
            root,
        })
    }
}

/// One signature line of a note.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NoteSignature {
    pub name: String,
    pub key_id: [u8; 4],
    pub signature: Vec<u8>,
}

/// Splits a note into its body and signature lines without checking them.
pub fn split_note(text: &str) -> Result<(&str, Vec<NoteSignature>), NoteError> {
    let bad = |why: &str| NoteError::Malformed(why.to_string());
    let cut = text
        .rfind("\n\n")
        .ok_or_else(|| bad("no blank line before signatures"))?;
    let body = &text[..=cut];
    let sigs = text[cut + 2..]
        .strip_suffix('\n')
        .ok_or_else(|| bad("no final newline"))?;
    let mut out: Vec<NoteSignature> = Vec::new();
    for line in sigs.split('\n') {
        if out.len() == MAX_SIGNATURES {
            return Err(bad("more than 100 signature lines"));
        }
        let rest = line
            .strip_prefix(SIGNATURE_PREFIX)
            .ok_or_else(|| bad("signature line without em dash"))?;
        let (name, b64) = rest
            .split_once(' ')
            .ok_or_else(|| bad("signature line without key name"))?;
        let blob = STANDARD
            .decode(b64)
            .map_err(|_| bad("signature is not base64"))?;
        if blob.len() < 5 {
            return Err(bad("signature too short"));
        }
        let key_id = [blob[0], blob[1], blob[2], blob[3]];
        // A key signs a note once; a repeat would only be checked again.
        if out.iter().any(|s| s.name == name && s.key_id == key_id) {
            return Err(bad("two signatures by the same key"));
        }
        out.push(NoteSignature {
            name: name.to_string(),
            key_id,
            signature: blob[4..].to_vec(),
        });
    }
    Ok((body, out))
}

/// Most signature lines a note may carry (the limit of Go's `note`
/// package). Every line naming a known key costs a signature check, so a
/// note padded with copies of one line would otherwise take time in
/// proportion to its size for nothing.
pub const MAX_SIGNATURES: usize = 100;

/// Checks a checkpoint note against the known log keys and returns what it
/// commits to and the key that signed it. At least one signature must be by a
/// known key (same name and key id) and verify; a signature that claims a known
/// key but does not verify is an error, not something to skip.
pub fn open_checkpoint(
    text: &str,
    keys: &[PublicKey],
    origin: Option<&str>,
) -> Result<(Checkpoint, PublicKey), NoteError> {
    let (body, sigs) = split_note(text)?;
    let checkpoint = Checkpoint::parse_body(body)?;
    if let Some(expected) = origin
        && checkpoint.origin != expected
    {
        return Err(NoteError::WrongOrigin {
            found: checkpoint.origin,
            expected: expected.into(),
        });
    }
    let mut signer = None;
    for sig in &sigs {
        let Some(key) = keys
            .iter()
            .find(|k| k.name() == sig.name && k.key_id() == sig.key_id)
        else {
            continue;
        };
        key.verify(body.as_bytes(), &sig.signature)
            .map_err(|_| NoteError::BadSignature {
                name: sig.name.clone(),
                key_id: hex::encode(sig.key_id),
            })?;
        signer.get_or_insert_with(|| key.clone());
    }
    let names: Vec<String> = sigs
        .iter()
        .map(|s| format!("{}+{}", s.name, hex::encode(s.key_id)))
        .collect();
    let signer = signer.ok_or_else(|| NoteError::NoKnownSigner(names.join(", ")))?;
    Ok((checkpoint, signer))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checkpoint() -> Checkpoint {
        Checkpoint {
            origin: "caracal.dev/ledger/test".into(),
            size: 12,
            root: [7; 32],
        }
    }

    #[test]
    fn signed_note_round_trips() {
        let key = KeyPair::generate("caracal.dev/ledger/test").unwrap();
        let note = checkpoint().sign(&key);
        assert!(note.starts_with("caracal.dev/ledger/test\n12\nBwcH"));
        assert!(note.contains("\n\n\u{2014} caracal.dev/ledger/test "));
        let (cp, signer) = open_checkpoint(
            &note,
            &[key.public().clone()],
            Some("caracal.dev/ledger/test"),
        )
        .unwrap();
        assert_eq!(cp, checkpoint());
        assert_eq!(signer.key_id(), key.key_id());
    }

    /// A note padded with copies of its signature line, or with more lines
    /// than any real note has, is refused before any signature is checked.
    #[test]
    fn repeated_or_too_many_signature_lines_are_malformed() {
        let key = KeyPair::generate("log").unwrap();
        let cp = Checkpoint {
            origin: "log".into(),
            ..checkpoint()
        };
        let note = cp.sign(&key);
        let line = note.trim_end().rsplit('\n').next().unwrap().to_owned();
        let keys = [key.public().clone()];
        assert!(open_checkpoint(&note, &keys, None).is_ok());
        let repeated = format!("{note}{line}\n");
        assert_eq!(
            open_checkpoint(&repeated, &keys, None).unwrap_err(),
            NoteError::Malformed("two signatures by the same key".into())
        );
        // 101 lines by different (unknown) keys, the real one among them.
        let mut padded = note.clone();
        for i in 0..MAX_SIGNATURES as u32 {
            let blob = STANDARD.encode([&i.to_be_bytes()[..], &[0u8; 8]].concat());
            padded.push_str(&format!("{SIGNATURE_PREFIX}other{i} {blob}\n"));
        }
        assert_eq!(
            open_checkpoint(&padded, &keys, None).unwrap_err(),
            NoteError::Malformed("more than 100 signature lines".into())
        );
    }

    #[test]
    fn rotated_keys_still_verify_old_notes() {
        let old = KeyPair::generate("log").unwrap();
        let new = KeyPair::generate("log").unwrap();
        let cp = Checkpoint {
            origin: "log".into(),
            ..checkpoint()
        };
        let keys = [new.public().clone(), old.public().clone()];
        assert_eq!(
            open_checkpoint(&cp.sign(&old), &keys, None)
                .unwrap()
                .1
                .key_id(),
            old.key_id()
        );
        assert_eq!(
            open_checkpoint(&cp.sign(&new), &keys, None)
                .unwrap()
                .1
                .key_id(),
            new.key_id()
        );
        assert!(matches!(
            open_checkpoint(&cp.sign(&old), &[new.public().clone()], None),
            Err(NoteError::NoKnownSigner(_))
        ));
    }

    #[test]
    fn any_change_to_the_note_is_rejected() {
        let key = KeyPair::generate("log").unwrap();
        let keys = [key.public().clone()];
        let note = checkpoint().sign(&key);
        for (i, _) in note.char_indices() {
            let mut bytes = note.clone().into_bytes();
            // Flip a low bit of ASCII bytes only, so the text stays UTF-8.
            if !bytes[i].is_ascii() {
                continue;
            }
            bytes[i] ^= 0x01;
            let Ok(changed) = String::from_utf8(bytes) else {
                continue;
            };
            if let Ok((cp, _)) = open_checkpoint(&changed, &keys, None) {
                panic!("change at byte {i} accepted: {cp:?}");
            }
        }
        assert!(open_checkpoint(&note, &keys, Some("other")).is_err());
    }

    #[test]
    fn malformed_notes_and_strangers_are_refused() {
        let key = KeyPair::generate("log").unwrap();
        let keys = [key.public().clone()];
        let cp = Checkpoint {
            origin: "log".into(),
            ..checkpoint()
        };
        let note = cp.sign(&key);
        let sig_line = note.split("\n\n").nth(1).unwrap();
        let other = KeyPair::generate("log").unwrap();
        let other_line = cp.sign(&other).split("\n\n").nth(1).unwrap().to_owned();
        let (_, blob) = sig_line.trim_end().rsplit_once(' ').unwrap();
        let refused = [
            // No blank line before the signatures.
            note.replacen("\n\n", "\n", 1),
            // A line in the signature block that is not a signature.
            format!("{note}garbage\n"),
            // No final newline.
            note.trim_end().to_owned(),
            // The right key id under another name, and the right name with
            // another key's id and signature.
            note.replace("\u{2014} log ", "\u{2014} logx "),
            format!("{}\n{other_line}", cp.body()),
            // A signature blob too short to hold a key id and a signature.
            format!("{}\n\u{2014} log AAAA\n", cp.body()),
        ];
        for text in refused {
            assert!(open_checkpoint(&text, &keys, None).is_err(), "{text:?}");
        }
        // Unknown signers next to a known one are ignored...
        let cosigned = format!("{note}{other_line}");
        assert!(open_checkpoint(&cosigned, &keys, None).is_ok());
        // ...but a known signer whose signature fails is an error, even
        // beside a valid one.
        let bad_blob = STANDARD.encode({
            let mut b = STANDARD.decode(blob).unwrap();
            let last = b.len() - 1;
            b[last] ^= 1;
            b
        });
        let forged = format!("{}\n{other_line}\u{2014} log {bad_blob}\n", cp.body());
        assert!(matches!(
            open_checkpoint(&forged, &keys, None),
            Err(NoteError::BadSignature { .. })
        ));
        // A failing line beside a valid one by the same key is a second
        // signature by that key: refused before any check.
        let doubled = format!("{note}\u{2014} log {bad_blob}\n");
        assert!(matches!(
            open_checkpoint(&doubled, &keys, None),
            Err(NoteError::Malformed(_))
        ));
    }

    #[test]
    fn size_must_be_canonical_decimal() {
        for body in ["o\n012\nAAAA\n", "o\n+1\nAAAA\n", "o\n\nAAAA\n", "o\n1\n"] {
            assert!(Checkpoint::parse_body(body).is_err(), "{body:?}");
        }
    }
}
