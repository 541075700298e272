//! What the `broker` command line needs from the core and a test suite does not: reading pass-through
//! arguments and data files, editing the settings file, and the columns of `broker inventory`.
//!
//! It lives in the core because it is broker's behaviour, tested here, but apart from the API a test
//! author uses: these items follow the CLI and may change with it.

mod columns;
mod passthrough;

pub use crate::settings::file::SettingsFile;
pub use columns::{FieldSpec, broker_columns, humanize_times};
pub use passthrough::{
    extend_arguments, load_args_file, load_data_file, names_data_file, normalize_declared,
    parse_data_text, parse_passthrough, setting_value,
};
