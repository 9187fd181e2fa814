//! Atelier's gRPC contracts, generated from `proto/atelier/<service>/v1`.

#![allow(clippy::all, clippy::pedantic, unused_qualifications)]

/// The encoded `FileDescriptorSet` of every contract, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/atelier_descriptor.bin"));

macro_rules! package {
    ($service:ident, $package:literal) => {
        pub mod $service {
            pub mod v1 {
                tonic::include_proto!($package);
            }
        }
    };
}

package!(auth, "atelier.auth.v1");
package!(image, "atelier.image.v1");
package!(processing, "atelier.processing.v1");
package!(user, "atelier.user.v1");
package!(workflow, "atelier.workflow.v1");
