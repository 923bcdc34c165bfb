//! What a webhook definition's `Type`, `RetryPolicy` and `SuccessStatus` say, parsed once when
//! a definition is read from a request or from its row, and stored as the same text as before.

use std::fmt;

use serde::{Serialize, Serializer};

macro_rules! named {
    ($name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        impl $name {
            /// Every value, in the order their names are listed to users.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The name, as stored and as JSON carries it.
            pub const fn name(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.name())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.name())
            }
        }
    };
}

/// A webhook's `Type` (spec 4.1): how it is delivered. crmhooks delivers `webhook` only; a
/// `crmscript` definition is refused when saved.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum WebhookType {
    /// An HTTP POST to `TargetUrl`.
    #[default]
    Webhook,
    /// A CRMScript run inside SuperOffice.
    CrmScript,
}

named!(WebhookType {
    Webhook => "webhook",
    CrmScript => "crmscript",
});

impl WebhookType {
    /// From its name, in any case.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL
            .iter()
            .copied()
            .find(|t| t.name().eq_ignore_ascii_case(s))
    }
}

/// What happens after a failed attempt (`RetryPolicy`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum RetryPolicy {
    /// Cycles of 3 attempts; a failed cycle goes to the back of the queue with a new EventId.
    #[default]
    SuperOffice,
    /// Exponentially growing delays with jitter, honouring `Retry-After`.
    Exponential,
}

named!(RetryPolicy {
    SuperOffice => "superoffice",
    Exponential => "exponential",
});

impl RetryPolicy {
    /// The names, as an error message lists them.
    pub const NAMES: [&'static str; 2] = [Self::ALL[0].name(), Self::ALL[1].name()];

    /// From its exact name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|p| p.name() == s)
    }
}

/// Which responses count as success (`SuccessStatus`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SuccessRule {
    /// Exactly 200 (SuperOffice).
    Exactly200,
    /// Any 2xx.
    Any2xx,
}

named!(SuccessRule {
    Exactly200 => "200",
    Any2xx => "2xx",
});

impl SuccessRule {
    /// From `"200"` or `"2xx"` (in any case, spaces around ignored).
    pub fn parse(s: &str) -> Option<Self> {
        let s = s.trim();
        Self::ALL
            .iter()
            .copied()
            .find(|r| r.name().eq_ignore_ascii_case(s))
    }

    /// Whether `status` is a success.
    pub fn is_success(self, status: u16) -> bool {
        match self {
            Self::Exactly200 => status == 200,
            Self::Any2xx => (200..300).contains(&status),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_as_stored() {
        for &t in WebhookType::ALL {
            assert_eq!(WebhookType::parse(t.name()), Some(t));
        }
        assert_eq!(
            WebhookType::parse("CRMScript"),
            Some(WebhookType::CrmScript)
        );
        assert_eq!(WebhookType::parse("email"), None);
        for &p in RetryPolicy::ALL {
            assert_eq!(RetryPolicy::parse(p.name()), Some(p));
        }
        assert_eq!(RetryPolicy::parse("SuperOffice"), None);
        assert_eq!(RetryPolicy::NAMES, ["superoffice", "exponential"]);
        assert_eq!(
            serde_json::to_string(&SuccessRule::Any2xx).ok().as_deref(),
            Some("\"2xx\"")
        );
    }

    #[test]
    fn success_rules() {
        assert!(SuccessRule::Exactly200.is_success(200));
        assert!(!SuccessRule::Exactly200.is_success(204));
        assert!(SuccessRule::Any2xx.is_success(204));
        assert!(!SuccessRule::Any2xx.is_success(302));
        assert_eq!(SuccessRule::parse(" 2XX"), Some(SuccessRule::Any2xx));
        assert_eq!(SuccessRule::parse("201"), None);
    }
}
