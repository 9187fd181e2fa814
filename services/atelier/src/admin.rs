//! `atelier admin grant EMAIL` / `atelier admin revoke EMAIL`: makes a user an
//! administrator, or takes the role back, with the operator's certificate
//! (under `SERVICE_TLS_DIR`, by default `DATA_DIR/tls`, made by the embedded
//! default). The user's next sign-in or token refresh carries the role.

use atelier_common::{
    config::Platform,
    identity::{Identity, ServiceName},
};
use atelier_proto::auth::v1::{SetUserRoleRequest, auth_service_client::AuthServiceClient};
use clap::Subcommand;

#[derive(Subcommand)]
pub enum AdminCommand {
    /// Make the user with this email an administrator
    Grant {
        /// The user's email
        email: String,
    },
    /// Take the administrator role from the user with this email
    Revoke {
        /// The user's email
        email: String,
    },
}

pub async fn run(command: AdminCommand) -> anyhow::Result<()> {
    let (email, role) = match command {
        AdminCommand::Grant { email } => (email, "admin"),
        AdminCommand::Revoke { email } => (email, "user"),
    };
    let platform = Platform::from_env()?;
    let identity = Identity::load(&platform.tls, ServiceName::Operator)?;
    let channel = identity.channel(&platform.endpoints.auth.url, platform.grpc_timeout)?;
    let reply = AuthServiceClient::new(channel)
        .set_user_role(SetUserRoleRequest {
            user_id: String::new(),
            role: role.to_owned(),
            email: email.clone(),
        })
        .await
        .map_err(|status| match status.code() {
            tonic::Code::NotFound => anyhow::anyhow!("no user has the email {email}"),
            _ => anyhow::anyhow!(
                "the auth service at {} refused: {}",
                platform.endpoints.auth.url,
                status.message()
            ),
        })?
        .into_inner();
    let id = reply.user.map(|user| user.id).unwrap_or_default();
    match role {
        "admin" => {
            println!("{email} ({id}) is an administrator from their next sign-in or token refresh")
        }
        _ => println!("{email} ({id}) is no longer an administrator"),
    }
    Ok(())
}
