//! stub
use serde_json::Value;
use crate::Opts;
use crate::report::Table;
pub(crate) fn run(_rvs: &std::path::Path, _o: &Opts) -> anyhow::Result<(Table, Value)> { todo!() }
