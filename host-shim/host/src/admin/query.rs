//! A request's query string, read the one way every admin route reads it:
//! `name=value` pairs split on `&`, the first pair with the name wins, a
//! value kept as sent (a route that takes text percent-decodes it).

use crate::controller::ControllerError;

/// The raw value of query parameter `name`, if given.
pub(super) fn value<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

/// Query parameter `name` as a whole number, if given; one line naming it
/// if it is not one.
pub(super) fn number(query: &str, name: &str) -> Result<Option<u64>, ControllerError> {
    value(query, name)
        .map(|text| {
            text.parse().map_err(|_| {
                ControllerError::Invalid(format!("query {name}: not a whole number: '{text}'"))
            })
        })
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_parameter_is_found_by_its_whole_name_and_read_as_a_number() {
        assert_eq!(value("cursor=3&key=a%26b", "key"), Some("a%26b"));
        assert_eq!(value("keys=1", "key"), None);
        assert_eq!(value("key", "key"), None);
        assert_eq!(value("key=&key=b", "key"), Some(""));
        assert_eq!(number("after=7&limit=5", "limit").unwrap(), Some(5));
        assert_eq!(number("after=7", "limit").unwrap(), None);
        for bad in [
            "limit=",
            "limit=-1",
            "limit=1.5",
            "limit=18446744073709551616",
        ] {
            let e = number(bad, "limit").unwrap_err().to_string();
            assert!(
                e.starts_with("query limit: ") && !e.contains('\n'),
                "{bad}: {e}"
            );
        }
    }
}
