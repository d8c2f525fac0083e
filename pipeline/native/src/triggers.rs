//! Which redaction rules a text needs, found in one pass over its bytes.
//!
//! The Python reference (`pipeline/transform/redact/triggers.py`) lower-cases the text and
//! searches it for every rule's trigger words. Here one Aho-Corasick automaton, matching ASCII
//! letters case-insensitively, walks the UTF-8 bytes of the text as it is: no lower-cased
//! copy, and every trigger found in the same walk, overlaps included.
//!
//! Why this equals the reference: triggers are lower-case ASCII, and `str.lower()` maps each
//! ASCII character to its ASCII lower case and every other character to non-ASCII ones, except
//! two: KELVIN SIGN (U+212A) becomes `k` and LATIN CAPITAL LETTER I WITH DOT ABOVE (U+0130)
//! becomes `i` and a combining dot. Non-ASCII characters are multi-byte sequences of bytes
//! above 0x7F, which no trigger byte equals. So outside those two characters, a trigger occurs
//! in the lower-cased text exactly where it occurs case-insensitively in the bytes. A text
//! holding one of them is answered `UNDECIDED`, and the reference decides it.

use aho_corasick::{AhoCorasick, AhoCorasickKind, MatchKind};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyString;

/// The answer for a text the automaton cannot judge alone.
const UNDECIDED: i128 = -1;

/// UTF-8 of the two characters whose lower case holds an ASCII letter.
const KELVIN: &[u8] = "\u{212A}".as_bytes();
const DOTTED_I: &[u8] = "\u{130}".as_bytes();

#[pyclass(frozen, module = "pipeline.native._core")]
pub struct Triggers {
    automaton: AhoCorasick,
    /// Per trigger (the automaton's pattern id), the rules it selects, one bit per rule.
    masks: Vec<u128>,
}

#[pymethods]
impl Triggers {
    /// `triggers`: (trigger, rules mask) pairs; each trigger non-empty lower-case ASCII, each
    /// mask below 2**127 so that every answer fits a signed 128-bit integer.
    #[new]
    pub fn new(triggers: Vec<(String, u128)>) -> PyResult<Self> {
        for (trigger, mask) in &triggers {
            let lower = trigger.bytes().all(|b| b.is_ascii() && !b.is_ascii_uppercase());
            if trigger.is_empty() || !lower {
                return Err(PyValueError::new_err(format!(
                    "trigger {trigger:?}: a non-empty lower-case ASCII string expected"
                )));
            }
            if *mask >> 127 != 0 {
                return Err(PyValueError::new_err("rules mask: at most 127 rules"));
            }
        }
        let automaton = AhoCorasick::builder()
            .ascii_case_insensitive(true)
            .match_kind(MatchKind::Standard)
            .kind(Some(AhoCorasickKind::DFA))
            .build(triggers.iter().map(|(trigger, _)| trigger.as_bytes()))
            .map_err(|error| PyValueError::new_err(format!("triggers: {error}")))?;
        let masks = triggers.into_iter().map(|(_, mask)| mask).collect();
        Ok(Self { automaton, masks })
    }

    /// The rules whose triggers occur in `text` (0: none can change it), or -1 when the
    /// Python reference must decide (see the module's docs; also a string that is not valid
    /// UTF-8, such as one holding a lone surrogate).
    fn mask(&self, text: &Bound<'_, PyString>) -> i128 {
        match text.to_str() {
            Ok(text) => self.scan(text.as_bytes()),
            Err(_) => UNDECIDED,
        }
    }

    /// The same for UTF-8 bytes, such as the JSON orjson writes.
    fn mask_bytes(&self, data: &[u8]) -> i128 {
        self.scan(data)
    }
}

impl Triggers {
    /// The mask of the rules `data` needs, or `UNDECIDED`.
    pub fn scan(&self, data: &[u8]) -> i128 {
        if !data.is_ascii() && (contains(data, KELVIN) || contains(data, DOTTED_I)) {
            return UNDECIDED;
        }
        // Most texts hold no trigger: one search answers them. The walk per byte costs the same
        // either way (the automaton has no prefilter worth the name over 183 case-insensitive
        // triggers); setting up an overlapping walk is what costs, about 100 ns a call: 1.41
        // against 2.05 µs for a synth message's texts without this search.
        if !self.automaton.is_match(data) {
            return 0;
        }
        let mut mask = 0u128;
        for found in self.automaton.find_overlapping_iter(data) {
            mask |= self.masks[found.pattern().as_usize()];
        }
        mask as i128
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|window| window == needle)
}
