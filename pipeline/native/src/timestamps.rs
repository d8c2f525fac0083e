//! A row's `datetime` from epoch milliseconds, without the float and the time-zone call.
//!
//! The Python reference is `datetime.fromtimestamp(ms / 1000, UTC)`: a float division, a
//! rounding to microseconds, and a call into the `UTC` object. Here the civil date comes from
//! integer arithmetic (days to year, month and day, after Howard Hinnant's `civil_from_days`)
//! and the object is built by the C API's constructor with the `UTC` singleton the reference
//! uses, so the two are equal and print alike.
//!
//! They agree exactly while `ms / 1000` is below 2**32 seconds in size (the year 2106): there
//! the float's spacing is under a microsecond, so the reference's rounding lands on the exact
//! value. Beyond it, and for a value that is no 64-bit integer, the answer is None and the
//! reference decides, errors included.

use pyo3::prelude::*;
use pyo3::types::{PyDateTime, PyTzInfo};

/// |ms| below this is exactly representable after the reference's division and rounding.
const EXACT_MS: i64 = (1i64 << 32) * 1000;

/// `datetime.fromtimestamp(ms / 1000, UTC)` for `|ms| < 2**32 * 1000`, else None.
#[pyfunction]
pub fn utc_datetime<'py>(
    py: Python<'py>,
    ms: &Bound<'py, PyAny>,
) -> PyResult<Option<Bound<'py, PyDateTime>>> {
    match ms.extract::<i64>() {
        Ok(ms) => datetime_of(py, ms),
        Err(_) => Ok(None),
    }
}

/// `utc_datetime` for an integer already in hand.
pub fn datetime_of(py: Python<'_>, ms: i64) -> PyResult<Option<Bound<'_, PyDateTime>>> {
    if ms <= -EXACT_MS || ms >= EXACT_MS {
        return Ok(None);
    }
    let days = ms.div_euclid(86_400_000);
    let in_day = ms.rem_euclid(86_400_000);
    let (year, month, day) = civil_from_days(days);
    let utc = PyTzInfo::utc(py)?;
    let seconds = in_day / 1000;
    PyDateTime::new(
        py,
        year as i32,
        month as u8,
        day as u8,
        (seconds / 3600) as u8,
        (seconds / 60 % 60) as u8,
        (seconds % 60) as u8,
        (in_day % 1000 * 1000) as u32,
        Some(&utc),
    )
    .map(Some)
}

/// (year, month, day) of the proleptic Gregorian calendar, `days` after 1970-01-01.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}
