//! io_uring runtime (placeholder: being written).
use super::{Driver, Setup};

pub fn run(_setup: Setup, _driver: &mut dyn Driver) -> std::io::Result<()> {
    Err(std::io::Error::other("io_uring runtime not built yet"))
}

pub fn probe() -> Result<(), String> {
    Err("io_uring runtime not built yet".into())
}
