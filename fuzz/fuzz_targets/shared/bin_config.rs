//! bin/config's parser modules for the fuzz targets (paths resolve from this directory).

#[path = "../../../bin/config/port.rs"]
pub mod port;

#[path = "../../../bin/config/file.rs"]
pub mod file;
