//! What the worker computes from a job's text.

use std::collections::HashMap;

use serde::Serialize;
use sha2::{Digest, Sha256};

/// How many of the most frequent words a result lists.
const TOP: usize = 5;

/// The result of analysing one text.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct Analysis {
    /// Number of words (runs of letters, digits and inner apostrophes).
    pub words: usize,
    /// Number of lines.
    pub lines: usize,
    /// Length in bytes.
    pub bytes: usize,
    /// Number of distinct lowercase words.
    pub unique_words: usize,
    /// The most frequent lowercase words, most frequent first, ties broken
    /// alphabetically.
    pub top_words: Vec<WordCount>,
    /// SHA-256 of the text, in lowercase hex.
    pub sha256: String,
}

/// A word and how often it occurs.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct WordCount {
    /// The lowercase word.
    pub word: String,
    /// How many times it occurs.
    pub count: usize,
}

/// Analyses `text`.
pub fn analyse(text: &str) -> Analysis {
    let mut counts: HashMap<String, usize> = HashMap::new();
    let mut words = 0;
    for word in words_of(text) {
        words += 1;
        *counts.entry(word.to_lowercase()).or_default() += 1;
    }
    let unique_words = counts.len();
    let mut ranked: Vec<(String, usize)> = counts.into_iter().collect();
    ranked.sort_by(|(a, m), (b, n)| n.cmp(m).then_with(|| a.cmp(b)));
    let top_words = ranked
        .into_iter()
        .take(TOP)
        .map(|(word, count)| WordCount { word, count })
        .collect();
    Analysis {
        words,
        lines: text.lines().count(),
        bytes: text.len(),
        unique_words,
        top_words,
        sha256: Sha256::digest(text.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
    }
}

/// The words of `text`: runs of alphanumeric characters and apostrophes,
/// without leading or trailing apostrophes.
fn words_of(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| !(c.is_alphanumeric() || c == '\''))
        .map(|w| w.trim_matches('\''))
        .filter(|w| !w.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_ranks_words() {
        let a = analyse("The cat saw the dog.\nThe dog didn't see 'the' cat!\n");
        assert_eq!((a.words, a.lines, a.bytes, a.unique_words), (11, 2, 51, 6));
        let top: Vec<(&str, usize)> = a
            .top_words
            .iter()
            .map(|w| (w.word.as_str(), w.count))
            .collect();
        assert_eq!(
            top,
            [
                ("the", 4),
                ("cat", 2),
                ("dog", 2),
                ("didn't", 1),
                ("saw", 1)
            ]
        );
    }

    #[test]
    fn hashes_the_text() {
        assert_eq!(
            analyse("abc").sha256,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn empty_and_punctuation_only_texts_have_no_words() {
        let a = analyse("-- ... ''");
        assert_eq!((a.words, a.unique_words, a.lines), (0, 0, 1));
        assert!(a.top_words.is_empty());
    }
}
