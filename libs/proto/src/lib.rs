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

impl user::v1::SubscriptionTier {
    /// The tier's name as the REST API and configuration spell it (`free`, `pro`,
    /// `enterprise`); empty when unspecified.
    pub fn slug(self) -> &'static str {
        match self {
            Self::Unspecified => "",
            Self::Free => "free",
            Self::Pro => "pro",
            Self::Enterprise => "enterprise",
        }
    }

    /// The slug of a tier as it travels (an `i32`); empty for an unknown value.
    pub fn slug_of(code: i32) -> &'static str {
        Self::try_from(code).map_or("", Self::slug)
    }
}
