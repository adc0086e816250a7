//! A name read back from a file another build may have written.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A named state (an enum serialized as its bare name, `"unhealthy"`) as
/// a file names it: one this build knows, or the name of one it does not
/// (an older or newer build wrote the file), kept as written so it is
/// shown and written back unchanged instead of failing the whole read.
/// The pattern of `failure_signatures::ReadClass`, for any such enum.
///
/// Serialized as the bare name, as `T` is. `T` gives its name through
/// [`AsRef<str>`], the same text it serializes as.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ReadName<T> {
    /// A name this build knows.
    Known(T),
    /// A name this build does not know.
    Unknown(String),
}

impl<T: Copy> ReadName<T> {
    /// The value, when this build knows it.
    pub fn known(&self) -> Option<T> {
        match self {
            ReadName::Known(t) => Some(*t),
            ReadName::Unknown(_) => None,
        }
    }
}

impl<T: AsRef<str>> ReadName<T> {
    /// The name as written.
    pub fn as_str(&self) -> &str {
        match self {
            ReadName::Known(t) => t.as_ref(),
            ReadName::Unknown(name) => name,
        }
    }
}

impl<T> From<T> for ReadName<T> {
    fn from(t: T) -> Self {
        ReadName::Known(t)
    }
}

impl<T: Default> Default for ReadName<T> {
    fn default() -> Self {
        ReadName::Known(T::default())
    }
}

/// `status == State::Unhealthy`: an unknown name equals no known value.
impl<T: PartialEq> PartialEq<T> for ReadName<T> {
    fn eq(&self, other: &T) -> bool {
        matches!(self, ReadName::Known(t) if t == other)
    }
}

impl<T: AsRef<str>> fmt::Display for ReadName<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "snake_case")]
    enum Light {
        Green,
        Red,
    }

    impl AsRef<str> for Light {
        fn as_ref(&self) -> &str {
            match self {
                Light::Green => "green",
                Light::Red => "red",
            }
        }
    }

    #[test]
    fn a_known_name_reads_as_known_and_an_unknown_one_is_kept_as_written() {
        let known: ReadName<Light> = serde_json::from_str(r#""red""#).unwrap();
        assert_eq!(known, ReadName::Known(Light::Red));
        assert!(known == Light::Red && known != Light::Green);
        assert_eq!(known.known(), Some(Light::Red));
        let unknown: ReadName<Light> = serde_json::from_str(r#""amber""#).unwrap();
        assert_eq!(unknown, ReadName::Unknown("amber".into()));
        assert!(unknown != Light::Red && unknown != Light::Green);
        assert_eq!(unknown.known(), None);
        for (v, text) in [(known, "red"), (unknown, "amber")] {
            assert_eq!(v.as_str(), text);
            assert_eq!(v.to_string(), text);
            assert_eq!(serde_json::to_string(&v).unwrap(), format!("\"{text}\""));
        }
        assert!(serde_json::from_str::<ReadName<Light>>("7").is_err());
    }
}
