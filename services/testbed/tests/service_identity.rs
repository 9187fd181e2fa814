//! Services trust each other by certificate: every method but health needs a
//! certificate from the platform's CA, and an internal method only the services it
//! names. A user's token, no credential, a certificate from another CA, or the
//! certificate of a service the method does not name are each refused.

use std::time::Duration;

use atelier_common::identity::{Identity, TlsSettings};
use atelier_proto::{
    image::v1::{DeleteUserImagesRequest, image_service_client::ImageServiceClient},
    processing::v1::{DeleteUserJobsRequest, processing_service_client::ProcessingServiceClient},
    user::v1::{
        GetProfileRequest, GetQuotaRequest, SetSubscriptionTierRequest, SubscriptionTier,
        user_service_client::UserServiceClient,
    },
};
use atelier_testbed::{Backend, ServiceName, TestPlatform};
use atelier_testkit::rest::sign_up;
use tonic::{
    Code, Request,
    transport::{Certificate, Channel, ClientTlsConfig, Endpoint},
};

/// A TLS channel that trusts the platform's CA but presents no certificate.
fn anonymous(platform: &TestPlatform, url: &str) -> Channel {
    let ca = std::fs::read(platform.platform.tls.dir.join("ca/ca.crt")).expect("the CA");
    Endpoint::from_shared(url.to_owned())
        .expect("url")
        .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca)))
        .expect("tls")
        .timeout(Duration::from_secs(5))
        .connect_lazy()
}

fn bearer<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("header"),
    );
    request
}

fn set_tier(user_id: &str, token: Option<&str>) -> Request<SetSubscriptionTierRequest> {
    let message = SetSubscriptionTierRequest {
        user_id: user_id.to_owned(),
        tier: SubscriptionTier::Enterprise as i32,
    };
    match token {
        Some(token) => bearer(message, token),
        None => Request::new(message),
    }
}

async fn tier_of(platform: &TestPlatform, user_id: &str) -> i32 {
    UserServiceClient::new(platform.channel_as(ServiceName::Processing, &platform.user_url))
        .get_quota(GetQuotaRequest {
            user_id: user_id.to_owned(),
        })
        .await
        .expect("quota as processing")
        .into_inner()
        .tier
}

#[tokio::test]
async fn internal_methods_refuse_every_caller_they_do_not_name() {
    let platform = TestPlatform::spawn(Backend::Sqlite).await;
    let user = sign_up(&platform, "plan@example.com").await;
    let free = tier_of(&platform, &user.id).await;
    assert_ne!(free, SubscriptionTier::Enterprise as i32);

    // No credential at all, and a user's own token: no service certificate.
    let mut anonymous_user = UserServiceClient::new(anonymous(&platform, &platform.user_url));
    for token in [None, Some(user.token.as_str())] {
        let status = anonymous_user
            .set_subscription_tier(set_tier(&user.id, token))
            .await
            .expect_err("refused without a service certificate");
        assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    }
    // Even the user-facing methods need the gateway (or another service) in front.
    let status = anonymous_user
        .get_profile(bearer(GetProfileRequest {}, &user.token))
        .await
        .expect_err("refused without a service certificate");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");

    // The gateway, even carrying the user's token, may not change a plan.
    let status =
        UserServiceClient::new(platform.channel_as(ServiceName::Gateway, &platform.user_url))
            .set_subscription_tier(set_tier(&user.id, Some(&user.token)))
            .await
            .expect_err("the gateway may not change a plan");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(status.message().contains("gateway"), "{status:?}");

    // Nor may another service whose job it is not.
    let mut as_processing =
        UserServiceClient::new(platform.channel_as(ServiceName::Processing, &platform.user_url));
    let status = as_processing
        .set_subscription_tier(set_tier(&user.id, None))
        .await
        .expect_err("processing may not change a plan");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");

    // A certificate naming the user service, from a CA of its own making.
    let elsewhere = tempfile::tempdir().expect("tempdir");
    let forged = Identity::load(
        &TlsSettings::generated(elsewhere.path()),
        ServiceName::Operator,
    )
    .expect("a foreign identity")
    .channel(&platform.user_url, Duration::from_secs(5))
    .expect("channel");
    let status = UserServiceClient::new(forged)
        .set_subscription_tier(set_tier(&user.id, None))
        .await
        .expect_err("a foreign CA is not trusted");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");

    assert_eq!(
        tier_of(&platform, &user.id).await,
        free,
        "the plan is unchanged"
    );

    // The operator may.
    UserServiceClient::new(platform.channel_as(ServiceName::Operator, &platform.user_url))
        .set_subscription_tier(set_tier(&user.id, None))
        .await
        .expect("the operator changes the plan");
    assert_eq!(
        tier_of(&platform, &user.id).await,
        SubscriptionTier::Enterprise as i32
    );
}

#[tokio::test]
async fn deletions_and_quotas_answer_only_the_services_that_use_them() {
    let platform = TestPlatform::spawn(Backend::Sqlite).await;
    let user = sign_up(&platform, "owner@example.com").await;
    let user_id = user.id.clone();

    // Deleting a user's images and jobs is the user service's to ask.
    for caller in [
        ServiceName::Gateway,
        ServiceName::Processing,
        ServiceName::Operator,
    ] {
        let status = ImageServiceClient::new(platform.channel_as(caller, &platform.image_url))
            .delete_user_images(bearer(
                DeleteUserImagesRequest {
                    user_id: user_id.clone(),
                },
                &user.token,
            ))
            .await
            .expect_err("only the user service deletes a user's images");
        assert_eq!(
            status.code(),
            Code::PermissionDenied,
            "{caller}: {status:?}"
        );
    }
    let status = ProcessingServiceClient::new(
        platform.channel_as(ServiceName::Gateway, &platform.processing_url),
    )
    .delete_user_jobs(DeleteUserJobsRequest {
        user_id: user_id.clone(),
    })
    .await
    .expect_err("only the user service deletes a user's jobs");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    ProcessingServiceClient::new(platform.channel_as(ServiceName::User, &platform.processing_url))
        .delete_user_jobs(DeleteUserJobsRequest {
            user_id: user_id.clone(),
        })
        .await
        .expect("the user service deletes a user's jobs");

    // Quotas are for processing and image to read, not the gateway.
    let status =
        UserServiceClient::new(platform.channel_as(ServiceName::Gateway, &platform.user_url))
            .get_quota(GetQuotaRequest { user_id })
            .await
            .expect_err("the gateway does not read quotas by user id");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");

    // Health stays open to any TLS client, for probes.
    for (url, service) in [
        (&platform.user_url, "atelier.user.v1.UserService"),
        (&platform.image_url, "atelier.image.v1.ImageService"),
    ] {
        atelier_common::grpc::check_health(anonymous(&platform, url), service)
            .await
            .expect("health without a certificate");
    }
}
