//! epoll runtime (placeholder: being written).
use super::{Driver, Setup};

pub fn run(_setup: Setup, _driver: &mut dyn Driver) -> std::io::Result<()> {
    Err(std::io::Error::other("epoll runtime not built yet"))
}
