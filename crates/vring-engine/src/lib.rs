//! vhost-user virtio-net device (see ARCHITECTURE.md).
