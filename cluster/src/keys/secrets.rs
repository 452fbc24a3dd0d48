//! `cluster.secret`: one secret, or a list of them while one is being rotated.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The accepted cluster secrets, newest first: the first signs and seals, each verifies and
/// opens. Written as one string (`secret = "s"`) or a list (`secret = ["new", "old"]`).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secrets(Vec<String>);

impl Secrets {
    /// Every accepted secret, the signing one first.
    pub fn all(&self) -> &[String] {
        &self.0
    }

    /// The secret that signs and seals, if any.
    pub fn first(&self) -> Option<&str> {
        self.0.first().map(String::as_str)
    }

    /// Says whether no secret is set (internal traffic is then neither sealed nor checked).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "Secrets({} set, not shown)", self.0.len())
    }
}

impl From<&str> for Secrets {
    fn from(secret: &str) -> Self {
        Self::from(vec![secret.to_string()])
    }
}

impl From<String> for Secrets {
    fn from(secret: String) -> Self {
        Self::from(vec![secret])
    }
}

impl From<Vec<String>> for Secrets {
    /// Empty strings are dropped (an empty secret means none).
    fn from(secrets: Vec<String>) -> Self {
        Self(
            secrets
                .into_iter()
                .filter(|secret| !secret.is_empty())
                .collect(),
        )
    }
}

impl PartialEq<&str> for Secrets {
    fn eq(&self, other: &&str) -> bool {
        self.0.len() == 1 && self.0[0] == *other
    }
}

impl Serialize for Secrets {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0.as_slice() {
            [] => serializer.serialize_str(""),
            [one] => serializer.serialize_str(one),
            many => many.serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for Secrets {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum OneOrMany {
            One(String),
            Many(Vec<String>),
        }
        Ok(match OneOrMany::deserialize(deserializer)? {
            OneOrMany::One(secret) => Self::from(secret),
            OneOrMany::Many(secrets) => Self::from(secrets),
        })
    }
}
