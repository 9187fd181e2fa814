//! `atelier login`, `signup`, `logout` and `whoami`.

use std::io::{BufRead, IsTerminal, Write};

use clap::Args;
use reqwest::Method;
use serde_json::{Value, json};

use super::{
    Common,
    api::{Api, TokenResponse, UserInfo},
    config::{self, Credentials},
    error::{CliError, Exit, Result},
    print_json, read_stdin_secret,
};

#[derive(Args, Debug)]
pub struct LoginArgs {
    #[command(flatten)]
    pub common: Common,
    /// The account's email (asked for when not given)
    #[arg(long, conflicts_with_all = ["key", "key_stdin"])]
    pub email: Option<String>,
    /// Read the password from stdin (for scripts) rather than asking for it
    #[arg(long, requires = "email", conflicts_with_all = ["key", "key_stdin"])]
    pub password_stdin: bool,
    /// Sign in with an API key (`atl_live_...`) rather than a password
    #[arg(long, conflicts_with = "key_stdin")]
    pub key: Option<String>,
    /// Read the API key from stdin
    #[arg(long)]
    pub key_stdin: bool,
}

#[derive(Args, Debug)]
pub struct SignupArgs {
    #[command(flatten)]
    pub common: Common,
    /// The new account's email (asked for when not given)
    #[arg(long)]
    pub email: Option<String>,
    /// Read the password from stdin rather than asking for it
    #[arg(long, requires = "email")]
    pub password_stdin: bool,
}

#[derive(Args, Debug)]
pub struct LogoutArgs {
    #[command(flatten)]
    pub common: Common,
}

/// Asks on stderr and reads one line from stdin.
fn prompt(question: &str) -> Result<String> {
    if !std::io::stdin().is_terminal() {
        return Err(CliError::usage(format!(
            "no terminal to ask for the {question} on: give it as an option"
        )));
    }
    eprint!("{question}: ");
    std::io::stderr().flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(line.trim().to_owned())
}

/// Asks for a password without echoing it.
fn prompt_password(question: &str) -> Result<String> {
    if !std::io::stdin().is_terminal() {
        return Err(CliError::usage(
            "no terminal to ask for the password on: use --password-stdin",
        ));
    }
    eprint!("{question}: ");
    std::io::stderr().flush()?;
    let password = console::Term::stderr()
        .read_secure_line()
        .map_err(|err| CliError::unexpected(format!("reading the password: {err}")))?;
    Ok(password)
}

fn email_and_password(email: Option<String>, password_stdin: bool) -> Result<(String, String)> {
    let email = match email {
        Some(email) => email,
        None => prompt("Email")?,
    };
    let password = if password_stdin {
        read_stdin_secret("password")?
    } else {
        prompt_password("Password")?
    };
    Ok((email, password))
}

/// Keeps `credentials` for the server and makes it the default one.
fn remember(api: &Api, credentials: Credentials) -> Result<()> {
    let base = api.base.clone();
    config::update(api.config_path(), |config| {
        config.default_url = Some(base.clone());
        config.servers.insert(base, credentials);
    })
}

fn report_signed_in(common: &Common, api: &Api, user: &UserInfo, how: &str) -> Result<()> {
    if common.json {
        print_json(&json!({
            "url": api.base,
            "user_id": user.id,
            "email": user.email,
            "auth": how,
        }))
    } else {
        if !common.quiet {
            match user.email.as_str() {
                "" => eprintln!("Signed in to {} with an API key", api.base),
                email => eprintln!("Signed in to {} as {email}", api.base),
            }
        }
        Ok(())
    }
}

pub async fn login(args: LoginArgs) -> Result<()> {
    let api = Api::new(&args.common)?.anonymous()?;
    let key = match (args.key, args.key_stdin) {
        (Some(key), _) => Some(key.trim().to_owned()),
        (None, true) => Some(read_stdin_secret("API key")?),
        (None, false) => None,
    };
    if let Some(key) = key {
        // The key is checked before it is kept: refused (401) it is not kept; a key
        // without the `account:read` scope (403) is valid but cannot say whose it is.
        let checked = api.with_key(&key);
        let user = match checked.get::<UserInfo>("/api/auth/me").await {
            Ok(user) => user,
            Err(err) if err.problem.as_ref().is_some_and(|p| p.status == 403) => UserInfo {
                id: String::new(),
                email: String::new(),
            },
            Err(err) if err.exit == Exit::Unauthorized => {
                return Err(CliError::new(
                    Exit::Unauthorized,
                    format!("the API key was refused: {}", err.message),
                ));
            }
            Err(err) => return Err(err),
        };
        let known = |text: &str| Some(text.to_owned()).filter(|text| !text.is_empty());
        remember(
            &api,
            Credentials {
                email: known(&user.email),
                user_id: known(&user.id),
                api_key: Some(key),
                ..Default::default()
            },
        )?;
        return report_signed_in(&args.common, &api, &user, "api_key");
    }
    let (email, password) = email_and_password(args.email, args.password_stdin)?;
    let tokens: TokenResponse = api
        .post(
            "/api/auth/login",
            &json!({"email": email, "password": password}),
        )
        .await?;
    remember(&api, tokens.credentials())?;
    report_signed_in(&args.common, &api, &tokens.user, "session")
}

pub async fn signup(args: SignupArgs) -> Result<()> {
    let api = Api::new(&args.common)?.anonymous()?;
    let (email, password) = email_and_password(args.email, args.password_stdin)?;
    let tokens: TokenResponse = api
        .post(
            "/api/auth/register",
            &json!({"email": email, "password": password}),
        )
        .await?;
    remember(&api, tokens.credentials())?;
    report_signed_in(&args.common, &api, &tokens.user, "session")
}

pub async fn logout(args: LogoutArgs) -> Result<()> {
    let api = Api::new(&args.common)?;
    let saved = config::load(api.config_path())?
        .servers
        .contains_key(&api.base);
    // The session ends on the server too; forgetting it here happens either way.
    let mut ended_remotely = false;
    if let Some(refresh_token) = api.refresh_token().await {
        let result = api
            .anonymous()?
            .call(
                Method::POST,
                "/api/auth/logout",
                Some(&json!({"refresh_token": refresh_token})),
            )
            .await;
        match result {
            Ok(()) => ended_remotely = true,
            Err(err) if !args.common.quiet => {
                eprintln!("atelier: the server did not end the session ({err}); forgetting it here")
            }
            Err(_) => {}
        }
    }
    let base = api.base.clone();
    config::update(api.config_path(), |config| {
        config.servers.remove(&base);
    })?;
    if args.common.json {
        return print_json(&json!({
            "url": api.base,
            "signed_out": saved,
            "session_ended": ended_remotely,
        }));
    }
    if !args.common.quiet {
        if saved {
            eprintln!("Signed out of {}", api.base);
        } else {
            eprintln!("Not signed in to {}", api.base);
        }
    }
    Ok(())
}

pub async fn whoami(common: Common) -> Result<()> {
    let api = Api::new(&common)?;
    api.require_credentials()?;
    let user: Value = api.get("/api/auth/me").await?;
    if common.json {
        let mut user = user;
        user["url"] = api.base.clone().into();
        return print_json(&user);
    }
    let email = user
        .get("email")
        .and_then(Value::as_str)
        .unwrap_or_default();
    println!("{email}");
    if !common.quiet {
        eprintln!("Signed in to {}", api.base);
    }
    Ok(())
}
