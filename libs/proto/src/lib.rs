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

/// Who may call each method: the contract's `atelier.access.v1.access` options,
/// read when the code is generated. Services enforce them; the gateway routes
/// from outside only what they allow.
pub mod access {
    pub mod v1 {
        tonic::include_proto!("atelier.access.v1");
    }

    /// A method of the contract and who may call it.
    #[derive(Debug)]
    pub struct Method {
        /// `/<package>.<Service>/<Method>`, the method's HTTP/2 path.
        pub path: &'static str,
        /// Needs no signed-in user.
        pub public: bool,
        /// The only services that may call it; empty for a method of the public API.
        pub internal_callers: &'static [&'static str],
        /// With `internal_callers`: the call carries the user's access token too.
        pub user_token: bool,
        /// What an API key must be granted to call it; empty when no key may
        /// (public methods need none, administrators' methods refuse keys).
        pub scope: &'static str,
    }

    impl Method {
        /// Whether the gateway serves it to the outside world.
        pub fn routed(&self) -> bool {
            self.internal_callers.is_empty()
        }

        /// Only an administrator may call it: a user whose token carries the admin
        /// role, or the operator certificate. Routed from outside like a user method.
        pub fn admin(&self) -> bool {
            ADMIN.contains(&self.path)
        }

        /// The full name of the service it belongs to (`atelier.auth.v1.AuthService`).
        pub fn service(&self) -> &'static str {
            self.path[1..]
                .split_once('/')
                .map_or("", |(service, _)| service)
        }
    }

    include!(concat!(env!("OUT_DIR"), "/access.rs"));
    include!(concat!(env!("OUT_DIR"), "/access_admin.rs"));

    /// Every scope an API key may be granted, as the contract's methods declare
    /// them (see `atelier.access.v1.MethodAccess.scope`) and as the REST API
    /// documents them.
    pub const SCOPES: &[&str] = &[
        "images:read",
        "images:write",
        "processing:read",
        "processing:write",
        "workflows:read",
        "account:read",
        "account:write",
        "keys:read",
        "keys:write",
        "webhooks:read",
        "webhooks:write",
        "shares:read",
        "shares:write",
    ];

    /// The method at `path`, if the contract has one there.
    pub fn method(path: &str) -> Option<&'static Method> {
        METHODS.iter().find(|method| method.path == path)
    }
}

#[cfg(test)]
mod tests {
    use super::access::{METHODS, SCOPES};

    #[test]
    fn every_method_of_the_public_api_declares_a_known_scope() {
        for method in METHODS {
            if method.routed() && !method.public && !method.admin() {
                assert!(
                    !method.scope.is_empty(),
                    "{} declares no scope: API keys could not call it",
                    method.path
                );
            }
            assert!(
                method.scope.is_empty() || SCOPES.contains(&method.scope),
                "{} declares the unknown scope {:?}",
                method.path,
                method.scope
            );
        }
    }

    #[test]
    fn public_and_administrators_methods_declare_no_scope() {
        for method in METHODS
            .iter()
            .filter(|method| method.public || method.admin())
        {
            assert!(method.scope.is_empty(), "{}", method.path);
        }
    }
}

package!(audit, "atelier.audit.v1");
package!(auth, "atelier.auth.v1");
package!(image, "atelier.image.v1");
package!(operations, "atelier.operations.v1");
package!(pipeline, "atelier.pipeline.v1");
package!(processing, "atelier.processing.v1");
package!(spend, "atelier.spend.v1");
package!(user, "atelier.user.v1");
package!(webhook, "atelier.webhook.v1");
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
