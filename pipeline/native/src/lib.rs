//! `pipeline.native._core`: the native half of tailpipe's hot path.
//!
//! Each type here is a pure function of its input, with a Python twin that stays the
//! reference: the tests run both on the same corpus and require the same answer. The module
//! is optional at run time (the light logger distribution ships without it), never for
//! correctness.

use pyo3::prelude::*;

mod columns;
mod console;
mod copy;
mod exception;
mod extra;
mod item;
mod json;
mod pyjson;
mod timestamps;
mod trace_items;
mod triggers;

#[pymodule]
fn _core(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add_class::<copy::CopyEncoder>()?;
    module.add_class::<trace_items::TraceItems>()?;
    module.add_class::<triggers::Triggers>()?;
    module.add_function(wrap_pyfunction!(timestamps::utc_datetime, module)?)?;
    Ok(())
}
