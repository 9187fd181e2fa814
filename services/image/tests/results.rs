//! Job results (StoreResult, the processing service's internal call) are kept only
//! for a job that exists: a result for an unknown job is refused before a byte is
//! read, and one whose job is deleted while its bytes stream in (a worker finishing
//! a download after its account or job was deleted) leaves no object and no row.

use std::time::Duration;

use atelier_fal_sim::Timing;
use atelier_proto::{
    image::v1::{
        StoreResultMetadata, StoreResultRequest, image_service_client::ImageServiceClient,
        store_result_request::Data,
    },
    processing::v1::{DeleteUserJobsRequest, processing_service_client::ProcessingServiceClient},
};
use atelier_testbed::{Backend, ServiceName, TestPlatform};
use atelier_testkit::{backends, fixtures, rest};
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};
use tokio::sync::mpsc;

fn metadata(user_id: &str, job_id: &str) -> StoreResultRequest {
    StoreResultRequest {
        data: Some(Data::Metadata(StoreResultMetadata {
            user_id: user_id.to_owned(),
            job_id: job_id.to_owned(),
            output_index: 7,
            filename: "late_result".into(),
            mime_type: "image/png".into(),
            ..Default::default()
        })),
    }
}

fn chunk(bytes: &[u8]) -> StoreResultRequest {
    StoreResultRequest {
        data: Some(Data::Chunk(bytes.to_vec().into())),
    }
}

/// The user's images as the REST API lists them.
async fn images(platform: &TestPlatform, user: &rest::User) -> Vec<Value> {
    let (status, listed) = rest::get(platform, user, "/api/images?page_size=100").await;
    assert_eq!(status, StatusCode::OK, "{listed}");
    listed["images"].as_array().expect("images").clone()
}

backends!(results_of_jobs_that_are_gone_are_not_kept);

async fn results_of_jobs_that_are_gone_are_not_kept(backend: Backend) {
    let platform = TestPlatform::spawn(backend).await;
    // Jobs stay at fal for the whole test: no worker stores anything of its own.
    platform.fal_sim().set_timing(Timing {
        queue_delay: Duration::ZERO,
        processing_time: Duration::from_secs(600),
    });
    let ada = rest::sign_up(&platform, "ada@example.com").await;
    let upload = rest::upload(&platform, &ada, fixtures::png(600, 400)).await;
    let job = rest::start_job(
        &platform,
        &ada,
        &upload,
        "esrgan-upscale",
        json!({"scale": 2}),
    )
    .await;
    let png = fixtures::png(64, 64);
    // As the processing service, the only caller StoreResult takes.
    let mut images_client =
        ImageServiceClient::new(platform.channel_as(ServiceName::Processing, &platform.image_url));

    // A job that never existed: refused at once.
    let unknown = uuid::Uuid::new_v4().to_string();
    let refused = images_client
        .store_result(tokio_stream::iter([
            metadata(&ada.id, &unknown),
            chunk(&png),
        ]))
        .await
        .expect_err("no job, no result");
    assert_eq!(refused.code(), tonic::Code::NotFound, "{refused:?}");
    // Another user's job is no better.
    let eve = rest::sign_up(&platform, "eve@example.com").await;
    let refused = images_client
        .store_result(tokio_stream::iter([metadata(&eve.id, &job), chunk(&png)]))
        .await
        .expect_err("not eve's job");
    assert_eq!(refused.code(), tonic::Code::NotFound, "{refused:?}");

    // The job exists when the result starts streaming in, and is deleted (as account
    // deletion deletes a user's jobs) before the last byte arrives.
    let (messages, queue) = mpsc::channel(4);
    let storing = tokio::spawn({
        let mut client = images_client.clone();
        async move {
            client
                .store_result(tokio_stream::wrappers::ReceiverStream::new(queue))
                .await
        }
    });
    let (head, tail) = png.split_at(png.len() / 2);
    messages.send(metadata(&ada.id, &job)).await.expect("send");
    messages.send(chunk(head)).await.expect("send");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let deleted = ProcessingServiceClient::new(
        platform.channel_as(ServiceName::User, &platform.processing_url),
    )
    .delete_user_jobs(DeleteUserJobsRequest {
        user_id: ada.id.clone(),
    })
    .await
    .expect("delete jobs")
    .into_inner();
    assert_eq!(deleted.deleted_count, 1);
    messages.send(chunk(tail)).await.expect("send");
    drop(messages);
    let stored = storing.await.expect("task").expect_err("the job is gone");
    assert_eq!(stored.code(), tonic::Code::NotFound, "{stored:?}");

    // Only the upload is left: its row, its original and its thumbnail.
    let listed = images(&platform, &ada).await;
    assert_eq!(listed.len(), 1, "{listed:#?}");
    assert_eq!(listed[0]["id"], upload.as_str());
    let objects = platform
        .objects
        .list(&format!("images/{}/", ada.id))
        .await
        .expect("list");
    assert_eq!(objects.len(), 2, "{objects:?}");
    assert!(
        objects.iter().all(|key| key.contains(&upload)),
        "{objects:?}"
    );
    let status = Client::new()
        .get(format!("{}/api/images/{upload}", platform.gateway_url))
        .bearer_auth(&ada.token)
        .send()
        .await
        .expect("get")
        .status();
    assert_eq!(status, StatusCode::OK);
}
