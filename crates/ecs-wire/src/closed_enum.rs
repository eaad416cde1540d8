//! `closed_enum!`: a fieldless enum with a fixed spelling per variant, parsed case-insensitively
//! (ECS casing varies, docs/ecs-api.md §3.4) and (de)serialized as that spelling. Used for wire values,
//! config values and metric labels, so every label set is closed by construction.

/// Declares a closed enum with `ALL`, `as_str`, case-insensitive `parse`, `Display`, `FromStr`,
/// `Serialize` and `Deserialize`.
#[macro_export]
macro_rules! closed_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident => $text:literal ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        $vis enum $name {
            $( $(#[$vmeta])* $variant ),+
        }

        impl $name {
            /// Every variant, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The canonical spelling.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }

            /// Parses any casing of a canonical spelling.
            pub fn parse(text: &str) -> Option<Self> {
                $( if text.eq_ignore_ascii_case($text) { return Some($name::$variant); } )+
                None
            }

            /// The canonical spellings, for error messages.
            pub fn expected() -> String {
                [$($text),+].join(", ")
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl ::std::str::FromStr for $name {
            type Err = String;
            fn from_str(text: &str) -> Result<Self, String> {
                $name::parse(text).ok_or_else(|| {
                    format!("unknown value {text:?}, expected one of: {}", $name::expected())
                })
            }
        }

        /// Compares with a spelling exactly (as stored or shown), e.g. `state == "due"`.
        impl ::std::cmp::PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }

        impl ::serde::Serialize for $name {
            fn serialize<S: ::serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> ::serde::Deserialize<'de> for $name {
            fn deserialize<D: ::serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = <::std::borrow::Cow<'de, str> as ::serde::Deserialize>::deserialize(d)?;
                text.parse().map_err(<D::Error as ::serde::de::Error>::custom)
            }
        }
    };
}

#[cfg(test)]
mod tests {
    closed_enum! {
        enum Colour { Red => "Red", DarkBlue => "DarkBlue" }
    }

    #[test]
    fn parses_any_casing_and_prints_the_canonical_one() {
        assert_eq!(Colour::parse("darkblue"), Some(Colour::DarkBlue));
        assert_eq!(Colour::parse("RED"), Some(Colour::Red));
        assert_eq!(Colour::parse("green"), None);
        assert_eq!(Colour::DarkBlue.to_string(), "DarkBlue");
        assert_eq!(Colour::ALL.len(), 2);
        let parsed: Colour = serde_json::from_str("\"red\"").unwrap();
        assert_eq!(parsed, Colour::Red);
        let err = serde_json::from_str::<Colour>("\"green\"").unwrap_err();
        assert!(
            err.to_string().contains("expected one of: Red, DarkBlue"),
            "{err}"
        );
    }
}
