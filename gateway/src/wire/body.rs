//! A request body's top-level JSON object, read and edited without building
//! a tree of it.
//!
//! The gateway reads a handful of top-level fields (model, stream, output
//! limits) and changes at most three; the rest (messages, tools, often most
//! of the bytes) only has to be checked as valid JSON and passed on. So a
//! body is kept as its members: each key and the raw text of its value,
//! borrowed from the bytes the client sent. Reading a field parses that
//! field alone; an edit replaces one member's text; writing the body out
//! copies every untouched member byte for byte, in the client's order. A
//! key sent twice is kept once, with its last value, so what the gateway
//! read is exactly what the provider receives.

use std::{borrow::Cow, collections::HashMap, fmt};

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;

/// Why a body could not be read as an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyError {
    /// Not JSON at all (serde_json's message).
    Invalid(String),
    /// JSON, but not an object.
    NotObject,
}

/// A member was present with a value of another type than asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WrongType;

/// The members of a top-level JSON object, in the order they were sent.
#[derive(Debug, Clone)]
pub struct JsonObject<'a> {
    members: Vec<(Cow<'a, str>, Cow<'a, str>)>,
}

impl<'a> JsonObject<'a> {
    /// Read `bytes` as one JSON object (every value inside is checked to be
    /// valid JSON, as a full parse would).
    pub fn parse(bytes: &'a [u8]) -> Result<Self, BodyError> {
        let mut de = serde_json::Deserializer::from_slice(bytes);
        match de.deserialize_map(MembersVisitor).and_then(|m| {
            de.end()?;
            Ok(m)
        }) {
            Ok(members) => Ok(JsonObject { members }),
            // Say "not JSON" only when it is not; valid JSON of another
            // type is a different mistake.
            Err(e) => match serde_json::from_slice::<IgnoredAny>(bytes) {
                Ok(_) => Err(BodyError::NotObject),
                Err(_) => Err(BodyError::Invalid(e.to_string())),
            },
        }
    }

    /// The raw JSON text of `key`'s value.
    pub fn raw(&self, key: &str) -> Option<&str> {
        self.members
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_ref())
    }

    /// True when `key` is present, whatever its value (null included).
    pub fn has(&self, key: &str) -> bool {
        self.raw(key).is_some()
    }

    /// `key`'s value parsed as `T`: `None` when absent or null, `Err` when
    /// present with a value of another type.
    pub fn get<T: serde::de::DeserializeOwned>(&self, key: &str) -> Result<Option<T>, WrongType> {
        match self.raw(key) {
            None | Some("null") => Ok(None),
            Some(raw) => serde_json::from_str(raw).map(Some).map_err(|_| WrongType),
        }
    }

    /// Set `key` to the JSON text `raw` (which must be valid JSON), in place,
    /// or appended when absent.
    pub fn set(&mut self, key: &str, raw: String) {
        match self.members.iter_mut().find(|(k, _)| k == key) {
            Some((_, v)) => *v = Cow::Owned(raw),
            None => self
                .members
                .push((Cow::Owned(key.to_owned()), Cow::Owned(raw))),
        }
    }

    /// The object as JSON bytes; `size_hint` is the expected length.
    pub fn to_vec(&self, size_hint: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(size_hint + 64);
        out.push(b'{');
        for (i, (key, value)) in self.members.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            // A key is a plain string; serde_json escapes it as JSON needs.
            serde_json::to_writer(&mut out, key.as_ref()).expect("writing to a Vec cannot fail");
            out.push(b':');
            out.extend_from_slice(value.as_bytes());
        }
        out.push(b'}');
        out
    }
}

/// A key, borrowed from the input unless it had escapes to undo.
struct Key<'a>(Cow<'a, str>);

impl<'de> serde::Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object key")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

type Members<'a> = Vec<(Cow<'a, str>, Cow<'a, str>)>;

/// Members a repeated key is looked for among one by one; beyond this many,
/// through an index. Request bodies have a handful.
const SEARCHED_ONE_BY_ONE: usize = 32;

struct MembersVisitor;

impl<'de> Visitor<'de> for MembersVisitor {
    type Value = Members<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut members: Members<'de> = Vec::with_capacity(map.size_hint().unwrap_or(8));
        // Where each key is, once there are too many members to search one
        // by one: a body of many small members (a 4 MiB body holds hundreds
        // of thousands) would otherwise cost time quadratic in their number.
        let mut index: Option<HashMap<Cow<'de, str>, usize>> = None;
        while let Some((key, value)) = map.next_entry::<Key<'de>, &'de RawValue>()? {
            let value = Cow::Borrowed(value.get());
            // A repeated key keeps one member, with the last value (what
            // serde_json and Python's json read), so the provider cannot be
            // sent a model or limit other than the one the gateway priced.
            let seen = match &index {
                Some(index) => index.get(&key.0).copied(),
                None => members.iter().position(|(k, _)| *k == key.0),
            };
            match seen {
                Some(i) => members[i].1 = value,
                None => {
                    if let Some(index) = &mut index {
                        index.insert(key.0.clone(), members.len());
                    }
                    members.push((key.0, value));
                    if index.is_none() && members.len() > SEARCHED_ONE_BY_ONE {
                        index = Some(
                            members
                                .iter()
                                .enumerate()
                                .map(|(i, (k, _))| (k.clone(), i))
                                .collect(),
                        );
                    }
                }
            }
        }
        Ok(members)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn round_trip(text: &str) -> Value {
        let object = JsonObject::parse(text.as_bytes()).unwrap();
        serde_json::from_slice(&object.to_vec(text.len())).unwrap()
    }

    #[test]
    fn untouched_bodies_come_out_as_they_went_in() {
        let text = r#"{"model":"m","messages":[{"role":"user","content":"h\u00e9 \"q\""}],"n":1}"#;
        let object = JsonObject::parse(text.as_bytes()).unwrap();
        assert_eq!(String::from_utf8(object.to_vec(0)).unwrap(), text);
        let spaced = " { \"a\" : [ 1 , 2 ] ,\n\"b\":{\"c\":null} } ";
        assert_eq!(round_trip(spaced), json!({"a": [1, 2], "b": {"c": null}}));
    }

    #[test]
    fn keys_with_escapes_are_read_and_written_back() {
        let text = r#"{"a\"b":1,"\u006dodel":"m"}"#;
        let object = JsonObject::parse(text.as_bytes()).unwrap();
        assert_eq!(object.raw("model"), Some(r#""m""#));
        assert_eq!(round_trip(text), json!({"a\"b": 1, "model": "m"}));
    }

    #[test]
    fn what_is_not_an_object_is_told_apart_from_what_is_not_json() {
        let cases: [(&str, Result<(), BodyError>); 8] = [
            ("{}", Ok(())),
            (r#"["model"]"#, Err(BodyError::NotObject)),
            ("42", Err(BodyError::NotObject)),
            ("null", Err(BodyError::NotObject)),
            ("", Err(BodyError::Invalid(String::new()))),
            (r#"{"a":1"#, Err(BodyError::Invalid(String::new()))),
            (r#"{"a":[1,}"#, Err(BodyError::Invalid(String::new()))),
            (r#"{"a":1} {"b":2}"#, Err(BodyError::Invalid(String::new()))),
        ];
        for (text, want) in cases {
            let got = JsonObject::parse(text.as_bytes())
                .map(|_| ())
                .map_err(|e| match e {
                    BodyError::Invalid(message) => {
                        assert!(!message.is_empty(), "{text:?}");
                        BodyError::Invalid(String::new())
                    }
                    other => other,
                });
            assert_eq!(got, want, "{text:?}");
        }
    }

    #[test]
    fn a_repeated_key_is_read_and_forwarded_once_with_its_last_value() {
        // Whatever the gateway reads is all the provider gets: no second
        // `model` for a provider that keeps the first repeat.
        let text = r#"{"model":"cheap","max_tokens":5,"model":"dear"}"#;
        let object = JsonObject::parse(text.as_bytes()).unwrap();
        assert_eq!(object.get::<String>("model"), Ok(Some("dear".into())));
        assert_eq!(
            String::from_utf8(object.to_vec(0)).unwrap(),
            r#"{"model":"dear","max_tokens":5}"#
        );

        let text = r#"{"max_tokens":5,"model":"m","max_tokens":900}"#;
        let mut object = JsonObject::parse(text.as_bytes()).unwrap();
        assert_eq!(object.get::<u64>("max_tokens"), Ok(Some(900)));
        object.set("max_tokens", "50".into());
        assert_eq!(
            String::from_utf8(object.to_vec(0)).unwrap(),
            r#"{"max_tokens":50,"model":"m"}"#
        );
        object.set("stream_options", r#"{"include_usage":true}"#.into());
        assert_eq!(
            round_trip(std::str::from_utf8(&object.to_vec(0)).unwrap()),
            json!({"max_tokens": 50, "model": "m", "stream_options": {"include_usage": true}})
        );
    }

    /// Repeats are found whether the key's first member is among those
    /// searched one by one or came after the index was built, and an
    /// escaped key is the same key as its plain spelling.
    #[test]
    fn repeats_are_found_among_many_members() {
        for members in [3, SEARCHED_ONE_BY_ONE, SEARCHED_ONE_BY_ONE + 1, 500] {
            let mut text: String = (0..members).map(|i| format!("\"k{i}\":{i},")).collect();
            text.push_str(r#""model":"cheap","#);
            text.extend((members..2 * members).map(|i| format!("\"k{i}\":{i},")));
            // Repeats of the first key, of the key after the threshold, and
            // of `model` (escaped), with new values.
            text.push_str(r#""k0":"x","mod\u0065l":"dear","#);
            text.push_str(&format!("\"k{}\":\"y\"", members + 1));
            let text = format!("{{{text}}}");
            let object = JsonObject::parse(text.as_bytes()).unwrap();
            assert_eq!(
                object.get::<String>("model"),
                Ok(Some("dear".into())),
                "{members}"
            );
            let out: Value = serde_json::from_slice(&object.to_vec(0)).unwrap();
            let map = out.as_object().unwrap();
            assert_eq!(map.len(), 2 * members + 1, "{members}: each key once");
            assert_eq!(
                (&map["k0"], &map[&format!("k{}", members + 1)]),
                (&json!("x"), &json!("y"))
            );
            assert_eq!(
                out,
                serde_json::from_str::<Value>(&text).unwrap(),
                "{members}"
            );
        }
    }

    /// A body of a few hundred thousand tiny members (a few MiB) is read in
    /// a moment, not in time quadratic in their number (minutes of a core
    /// per request before the index).
    #[test]
    fn many_members_are_read_in_linear_time() {
        let members = 300_000;
        let text: String = format!(
            "{{{}\"model\":\"m\"}}",
            (0..members)
                .map(|i| format!("\"k{i}\":0,"))
                .collect::<String>()
        );
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let object = JsonObject::parse(text.as_bytes()).unwrap();
            let _ = done.send(object.has("model"));
        });
        let read = finished.recv_timeout(std::time::Duration::from_secs(60));
        assert_eq!(
            read,
            Ok(true),
            "{members} members were not read within a minute"
        );
    }

    #[test]
    fn typed_reads_tell_absent_and_null_from_the_wrong_type() {
        let object = JsonObject::parse(br#"{"a":null,"b":7,"c":"7","d":-1,"e":1.5}"#).unwrap();
        assert_eq!(object.get::<u64>("a"), Ok(None));
        assert_eq!(object.get::<u64>("missing"), Ok(None));
        assert_eq!(object.get::<u64>("b"), Ok(Some(7)));
        assert_eq!(object.get::<u64>("c"), Err(WrongType));
        assert_eq!(object.get::<u64>("d"), Err(WrongType));
        assert_eq!(object.get::<u64>("e"), Err(WrongType));
        assert!(object.has("a"));
        assert!(!object.has("missing"));
    }
}
