//! io_uring data plane (see ARCHITECTURE.md).
