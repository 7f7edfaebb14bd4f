//! The `FROM scratch` container image (feature `docker`): a statically linked build of the
//! binary, and an image built from it with bollard.
//!
//! ```no_run
//! # async fn demo() -> Result<(), waha_sim::SimError> {
//! let docker = bollard::Docker::connect_with_socket_defaults()?;
//! let tag = waha_sim::container::build_default_image(&docker).await?;
//! assert_eq!(tag, waha_sim::container::DEFAULT_IMAGE_TAG);
//! # Ok(())
//! # }
//! ```
//!
//! The binary is linked statically against glibc (`+crt-static`, target
//! `x86_64-unknown-linux-gnu`). Such a binary cannot use NSS, so inside the image webhook URLs
//! should name IP addresses: host names may fail to resolve.

mod image;
mod static_binary;

pub use image::{DEFAULT_IMAGE_TAG, IMAGE_PORT, build_default_image, build_image, dockerfile};
pub use static_binary::{StaticBuild, is_static_elf};
