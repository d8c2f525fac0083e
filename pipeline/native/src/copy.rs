//! Rows to PostgreSQL's binary COPY format, in one pass and without a Python call per value.
//!
//! The reference is asyncpg's `copy_records_to_table`, which calls a codec per value (a
//! `datetime` is compared with infinity and converted through Python arithmetic). Here each
//! column's type is known up front and each value is written by a `match` on it. The encoder
//! takes only what it can write exactly as asyncpg would: exact `str`, `int`, `bool`, `bytes`,
//! `list` of `str`, and `datetime`s in `UTC`. Anything else raises `ValueError`; the caller
//! then abandons the COPY and hands the table's rows to asyncpg, so PostgreSQL stores the same
//! rows, and refuses the same ones, either way.
//!
//! Format (PostgreSQL docs, "COPY", "Binary Format"): the signature `PGCOPY\n\xff\r\n\0`, flags
//! and header extension (0, 0); per row the field count (i16) and per field its length (i32,
//! -1 for NULL) and bytes; the trailer -1 (i16). timestamptz is microseconds since
//! 2000-01-01 UTC (i64); jsonb is a version byte (1) and the text; a one-dimensional array is
//! its dimension count, a has-null flag, the element type's OID, then the length and lower
//! bound (1) of the dimension and the elements as fields.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{
    PyBool, PyBytes, PyDateAccess, PyDateTime, PyInt, PyList, PyString, PyTimeAccess,
    PyTuple, PyTzInfo, PyTzInfoAccess,
};

const SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0";
const TEXT_OID: u32 = 25;
/// Days from 0000-03-01 (the civil calendar's origin below) to 2000-01-01, PostgreSQL's epoch.
const PG_EPOCH_DAYS: i64 = 730_425;

#[derive(Clone, Copy, Debug)]
enum Kind {
    Timestamptz,
    Text,
    Smallint,
    Integer,
    Bigint,
    Boolean,
    Bytea,
    Jsonb,
    TextArray,
}

impl Kind {
    fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "timestamp with time zone" | "timestamptz" => Self::Timestamptz,
            "text" => Self::Text,
            "smallint" => Self::Smallint,
            "integer" => Self::Integer,
            "bigint" => Self::Bigint,
            "boolean" => Self::Boolean,
            "bytea" => Self::Bytea,
            "jsonb" => Self::Jsonb,
            "text[]" => Self::TextArray,
            _ => return None,
        })
    }
}

#[pyclass(frozen, module = "pipeline.native._core")]
pub struct CopyEncoder {
    kinds: Vec<Kind>,
}

#[pymethods]
impl CopyEncoder {
    /// `types`: each column's type as PostgreSQL's `format_type` names it.
    #[new]
    fn new(types: Vec<String>) -> PyResult<Self> {
        let kinds = types
            .iter()
            .map(|name| {
                Kind::parse(name)
                    .ok_or_else(|| PyValueError::new_err(format!("column type {name:?}: not encoded")))
            })
            .collect::<PyResult<Vec<_>>>()?;
        Ok(Self { kinds })
    }

    /// `rows` (tuples, one value per column) as a piece of a COPY stream: with `first` the
    /// signature and header before them, with `last` the trailer after them.
    fn encode<'py>(
        &self,
        py: Python<'py>,
        rows: &Bound<'py, PyAny>,
        first: bool,
        last: bool,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let utc = PyTzInfo::utc(py)?;
        let mut out: Vec<u8> = Vec::with_capacity(64 * 1024);
        if first {
            out.extend_from_slice(SIGNATURE);
            out.extend_from_slice(&[0; 8]);
        }
        for (index, row) in rows.try_iter()?.enumerate() {
            let row = row?;
            let row = row.cast_exact::<PyTuple>().map_err(|_| not_encoded(index, None))?;
            if row.len() != self.kinds.len() {
                return Err(not_encoded(index, None));
            }
            out.extend_from_slice(&(self.kinds.len() as i16).to_be_bytes());
            for (column, (kind, value)) in self.kinds.iter().zip(row.iter()).enumerate() {
                if !field(&mut out, *kind, &value, &utc) {
                    return Err(not_encoded(index, Some(column)));
                }
            }
        }
        if last {
            out.extend_from_slice(&(-1i16).to_be_bytes());
        }
        Ok(PyBytes::new(py, &out))
    }
}

fn not_encoded(row: usize, column: Option<usize>) -> PyErr {
    let at = column.map_or(String::new(), |c| format!(", column {c}"));
    PyValueError::new_err(format!("row {row}{at}: a value the native COPY does not encode"))
}

/// Appends one field; false for a value this encoder leaves to asyncpg.
fn field(out: &mut Vec<u8>, kind: Kind, value: &Bound<'_, PyAny>, utc: &Bound<'_, PyTzInfo>) -> bool {
    if value.is_none() {
        out.extend_from_slice(&(-1i32).to_be_bytes());
        return true;
    }
    match kind {
        Kind::Text => text(out, value, None),
        Kind::Jsonb => text(out, value, Some(1)),
        Kind::Smallint => integer(out, value, 2),
        Kind::Integer => integer(out, value, 4),
        Kind::Bigint => integer(out, value, 8),
        Kind::Boolean => match value.cast_exact::<PyBool>() {
            Ok(flag) => {
                out.extend_from_slice(&1i32.to_be_bytes());
                out.push(u8::from(flag.is_true()));
                true
            }
            Err(_) => false,
        },
        Kind::Bytea => match value.cast_exact::<PyBytes>() {
            Ok(data) => put(out, data.as_bytes()),
            Err(_) => false,
        },
        Kind::Timestamptz => timestamptz(out, value, utc),
        Kind::TextArray => text_array(out, value),
    }
}

fn put(out: &mut Vec<u8>, data: &[u8]) -> bool {
    let Ok(length) = i32::try_from(data.len()) else {
        return false;
    };
    out.extend_from_slice(&length.to_be_bytes());
    out.extend_from_slice(data);
    true
}

fn text(out: &mut Vec<u8>, value: &Bound<'_, PyAny>, version: Option<u8>) -> bool {
    let Ok(string) = value.cast_exact::<PyString>() else {
        return false;
    };
    let Ok(data) = string.to_str() else {
        return false; // a lone surrogate: asyncpg raises, and so will the fallback
    };
    match version {
        None => put(out, data.as_bytes()),
        Some(version) => {
            let Ok(length) = i32::try_from(data.len() + 1) else {
                return false;
            };
            out.extend_from_slice(&length.to_be_bytes());
            out.push(version);
            out.extend_from_slice(data.as_bytes());
            true
        }
    }
}

fn integer(out: &mut Vec<u8>, value: &Bound<'_, PyAny>, width: usize) -> bool {
    let Ok(number) = value.cast_exact::<PyInt>() else {
        return false;
    };
    let Ok(number) = number.extract::<i64>() else {
        return false;
    };
    match width {
        2 => i16::try_from(number).map(|n| put(out, &n.to_be_bytes())).unwrap_or(false),
        4 => i32::try_from(number).map(|n| put(out, &n.to_be_bytes())).unwrap_or(false),
        _ => put(out, &number.to_be_bytes()),
    }
}

fn timestamptz(out: &mut Vec<u8>, value: &Bound<'_, PyAny>, utc: &Bound<'_, PyTzInfo>) -> bool {
    let Ok(moment) = value.cast_exact::<PyDateTime>() else {
        return false;
    };
    match moment.get_tzinfo() {
        Some(zone) if zone.is(utc) => {}
        _ => return false, // naive, or another zone: asyncpg's conversion decides
    }
    let year = i64::from(moment.get_year());
    if !(2..=9998).contains(&year) {
        return false; // near datetime.min and .max, which asyncpg writes as -infinity, infinity
    }
    let days = days_from_civil(year, i64::from(moment.get_month()), i64::from(moment.get_day()));
    let seconds = i64::from(moment.get_hour()) * 3600
        + i64::from(moment.get_minute()) * 60
        + i64::from(moment.get_second());
    let micros = (days - PG_EPOCH_DAYS) * 86_400_000_000
        + seconds * 1_000_000
        + i64::from(moment.get_microsecond());
    put(out, &micros.to_be_bytes())
}

fn text_array(out: &mut Vec<u8>, value: &Bound<'_, PyAny>) -> bool {
    let Ok(items) = value.cast_exact::<PyList>() else {
        return false;
    };
    if items.is_empty() {
        return false; // asyncpg writes an empty array with no dimension; left to it
    }
    let start = out.len();
    out.extend_from_slice(&0i32.to_be_bytes()); // the field's length, filled in below
    out.extend_from_slice(&1i32.to_be_bytes());
    let flags_at = out.len();
    out.extend_from_slice(&0i32.to_be_bytes());
    out.extend_from_slice(&TEXT_OID.to_be_bytes());
    let Ok(count) = i32::try_from(items.len()) else {
        return false;
    };
    out.extend_from_slice(&count.to_be_bytes());
    out.extend_from_slice(&1i32.to_be_bytes());
    let mut has_null = false;
    for item in items.iter() {
        if item.is_none() {
            has_null = true;
            out.extend_from_slice(&(-1i32).to_be_bytes());
        } else if !text(out, &item, None) {
            return false;
        }
    }
    if has_null {
        out[flags_at..flags_at + 4].copy_from_slice(&1i32.to_be_bytes());
    }
    let Ok(length) = i32::try_from(out.len() - start - 4) else {
        return false;
    };
    out[start..start + 4].copy_from_slice(&length.to_be_bytes());
    true
}

/// Days since 0000-03-01 of the proleptic Gregorian date (Howard Hinnant's `days_from_civil`,
/// shifted so that the origin is that day).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe
}
