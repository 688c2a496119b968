//! `/auth`: signup, login, refresh, logout, the caller's profile and user lookup.

use super::client_addr::client_addr;
use super::{caller, json, json_body, render, settle, ApiError, ApiResult};
use crate::app::App;
use crate::passwords::PasswordError;
use crate::rate_limit::{client_key, AuthRefusal};
use crate::tokens::{self, Caller};
use bazaar_actors::cart::CartError;
use bazaar_actors::login_sessions::Rotation;
use bazaar_actors::user::{GetUser, NewUser, Register, UserError};
use bazaar_protocol::auth::{LoginRequest, RefreshRequest, SignupRequest, TokenPair, UserView};
use bazaar_protocol::values::{parse_name, Email, Password, Role};
use bazaar_protocol::{ErrorCode, UserId};
use chrono::Utc;
use std::net::SocketAddr;
use std::sync::Arc;
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Reply};

impl From<UserError> for ApiError {
    fn from(error: UserError) -> Self {
        match error {
            UserError::NotFound => ApiError::not_found("user"),
            UserError::EmailTaken => ApiError::new(ErrorCode::EmailTaken, "the e-mail address is already registered"),
            UserError::NotABuyer => ApiError::forbidden("only buyers have a cart"),
            UserError::Cart(refused @ CartError::Full(_)) => ApiError::new(ErrorCode::CartFull, refused.to_string()),
            UserError::Unavailable => ApiError::unavailable(),
        }
    }
}

impl From<PasswordError> for ApiError {
    fn from(error: PasswordError) -> Self {
        match error {
            PasswordError::Busy => {
                ApiError::new(ErrorCode::Unavailable, "the node is busy checking passwords, retry shortly")
                    .with_retry_after(1)
            }
            PasswordError::Failed => ApiError::unavailable(),
        }
    }
}

/// Counts a login or signup against the limits in front of password work.
fn admit(app: &App, client: Option<SocketAddr>) -> Result<(), ApiError> {
    let seconds = |wait: std::time::Duration| wait.as_secs() + 1;
    app.auth_limits.admit(client.map(|c| c.ip())).map_err(|refusal| match refusal {
        AuthRefusal::Client(wait) => {
            metrics::counter!("bazaar_rate_limited_total", "limit" => "auth_per_client").increment(1);
            ApiError::new(ErrorCode::RateLimited, "too many sign-ups and logins from this address, retry later")
                .with_retry_after(seconds(wait))
        }
        AuthRefusal::Node(wait) => {
            metrics::counter!("bazaar_rate_limited_total", "limit" => "auth_per_node").increment(1);
            ApiError::new(ErrorCode::Unavailable, "the node takes no more sign-ups and logins right now, retry shortly")
                .with_retry_after(seconds(wait))
        }
    })
}

/// The routes of this resource.
pub fn routes(app: Arc<App>) -> BoxedFilter<(Response,)> {
    let limit = app.settings.body_limit_bytes;
    let with_app = {
        let app = app.clone();
        warp::any().map(move || app.clone())
    };
    let signup = warp::path!("auth" / "signup")
        .and(warp::post())
        .and(with_app.clone())
        .and(client_addr())
        .and(json_body::<SignupRequest>(limit))
        .and_then(|app, client, body| async move { render(signup(app, client, body).await) });
    let login = warp::path!("auth" / "login")
        .and(warp::post())
        .and(with_app.clone())
        .and(client_addr())
        .and(json_body::<LoginRequest>(limit))
        .and_then(|app, client, body| async move { render(login(app, client, body).await) });
    let refresh = warp::path!("auth" / "refresh")
        .and(warp::post())
        .and(with_app.clone())
        .and(json_body::<RefreshRequest>(limit))
        .and_then(|app, body| async move { render(refresh(app, body).await) });
    let logout = warp::path!("auth" / "logout")
        .and(warp::post())
        .and(with_app.clone())
        .and(caller(app.clone()))
        .and(json_body::<RefreshRequest>(limit))
        .and_then(|app, who, body| async move { render(logout(app, who, body).await) });
    let me = warp::path!("auth" / "me")
        .and(warp::get())
        .and(with_app.clone())
        .and(caller(app.clone()))
        .and_then(|app, who| async move { render(me(app, who).await) });
    let user = warp::path!("auth" / "user" / String)
        .and(warp::get())
        .and(with_app)
        .and(caller(app))
        .and_then(|id, app, who| async move { render(lookup(app, who, id).await) });
    signup.or(login).unify().or(refresh).unify().or(logout).unify().or(me).unify().or(user).unify().boxed()
}

async fn signup(app: Arc<App>, client: Option<SocketAddr>, body: SignupRequest) -> ApiResult {
    let email = Email::parse(&body.email)?;
    let password = Password::parse(&body.password)?;
    let role = Role::parse(&body.role)?;
    let name = match &body.name {
        Some(name) => parse_name("name", name, 100)?,
        None => email.as_str().split('@').next().unwrap_or_default().to_owned(),
    };
    admit(&app, client)?;
    let password_hash = app.passwords.hash(password.expose().to_owned()).await?;
    let new = NewUser { email, password_hash, role, name };
    let id = UserId::generate();
    let view = settle(app.regions.users.ask(id.as_str(), Register(new)).await)?;
    Ok(json(StatusCode::CREATED, &view))
}

/// The visibility rule's relation: from the cache when it knows, from SQL otherwise (and then
/// remembered).
async fn has_paid_order(app: &App, buyer: &str, seller: &str) -> Result<bool, ApiError> {
    if let Some(known) = app.cache.paid_relation(buyer, seller).await {
        return Ok(known);
    }
    let paid = app.reads.has_paid_order(buyer, seller).await?;
    if paid {
        app.cache.remember_paid_relation(buyer, seller).await;
    }
    Ok(paid)
}

fn issue_pair(app: &App, user: &UserId, role: Role, session: &str, refresh_token: String) -> TokenPair {
    TokenPair {
        access_token: app.tokens.issue(user, role, session),
        refresh_token,
        expires_in: app.tokens.access_ttl.as_secs(),
    }
}

async fn login(app: Arc<App>, client: Option<SocketAddr>, body: LoginRequest) -> ApiResult {
    let bad_credentials = || ApiError::new(ErrorCode::Unauthorized, "wrong e-mail or password");
    admit(&app, client)?;
    // Unparseable e-mails are counted too, under their raw spelling, so they cannot dodge the limit.
    let email = Email::parse(&body.email).map(|e| e.as_str().to_owned()).unwrap_or_else(|_| body.email.clone());
    // Per client address and e-mail: wrong passwords sent from one address for someone else's
    // e-mail must not lock its owner out. Counted cluster-wide in Redis when it answers, on this
    // node otherwise.
    let key = format!("{} {email}", client_key(client.map(|c| c.ip())));
    let limited = match app.cache.login_attempt(&key, app.settings.login_attempts_per_minute).await {
        Some(outcome) => outcome,
        None => app.logins.attempt(&key).map_err(|wait| wait.as_secs() + 1),
    };
    if let Err(retry_after) = limited {
        metrics::counter!("bazaar_rate_limited_total", "limit" => "login").increment(1);
        return Err(
            ApiError::new(ErrorCode::RateLimited, "too many login attempts, retry later").with_retry_after(retry_after)
        );
    }
    let user = app.reads.account_by_email(&email).await?;
    let stored = user.as_ref().map(|u| u.password_hash.clone());
    let verified = app.passwords.verify(body.password, stored).await?;
    let user = match user {
        Some(user) if verified => user,
        _ => return Err(bad_credentials()),
    };
    let refresh_token = tokens::new_refresh_token();
    let now = Utc::now();
    let session = uuid::Uuid::now_v7().to_string();
    app.login_sessions
        .start(
            &session,
            user.view.id.as_str(),
            &tokens::refresh_token_hash(&refresh_token),
            now + app.tokens.refresh_ttl,
            now,
        )
        .await?;
    Ok(json(StatusCode::OK, &issue_pair(&app, &user.view.id, user.view.role, &session, refresh_token)))
}

async fn refresh(app: Arc<App>, body: RefreshRequest) -> ApiResult {
    let next = tokens::new_refresh_token();
    let now = Utc::now();
    let rotation = app
        .login_sessions
        .rotate(
            &tokens::refresh_token_hash(&body.refresh_token),
            &tokens::refresh_token_hash(&next),
            now + app.tokens.refresh_ttl,
            now,
        )
        .await?;
    match rotation {
        Rotation::Rotated { user_id, family_id } => {
            let user = app.reads.account(&user_id).await?.ok_or_else(ApiError::unauthorized)?;
            Ok(json(StatusCode::OK, &issue_pair(&app, &user.view.id, user.view.role, &family_id, next)))
        }
        Rotation::Reused { family_id } => {
            // Someone holds a copy: the access tokens of the session go with its refresh tokens.
            app.tokens.deny(&family_id, now);
            Err(ApiError::new(ErrorCode::Unauthorized, "refresh token reused; every session of it is revoked"))
        }
        Rotation::Invalid => Err(ApiError::new(ErrorCode::Unauthorized, "refresh token unknown, expired or revoked")),
    }
}

async fn logout(app: Arc<App>, who: Caller, body: RefreshRequest) -> ApiResult {
    let hash = tokens::refresh_token_hash(&body.refresh_token);
    let now = Utc::now();
    let Some(session) = app.login_sessions.revoke(&hash, who.id.as_str(), now).await? else {
        return Err(ApiError::new(ErrorCode::Unauthorized, "refresh token unknown"));
    };
    // The access tokens of the session end now too; other nodes learn of it from the store.
    app.tokens.deny(&session, now);
    Ok(warp::reply::with_status(warp::reply(), StatusCode::NO_CONTENT).into_response())
}

async fn profile(app: &App, id: &UserId) -> Result<UserView, ApiError> {
    settle(app.regions.users.ask(id.as_str(), GetUser).await)
}

async fn me(app: Arc<App>, who: Caller) -> ApiResult {
    // A valid token for a user that no longer exists is as good as no token.
    let view = profile(&app, &who.id).await.map_err(|e| match e.code {
        ErrorCode::NotFound => ApiError::unauthorized(),
        _ => e,
    })?;
    Ok(json(StatusCode::OK, &view))
}

async fn lookup(app: Arc<App>, who: Caller, id: String) -> ApiResult {
    let target = match app.cache.profile(&id).await {
        Some(cached) => cached,
        None => {
            let found = profile(&app, &UserId::from(id)).await?;
            app.cache.remember_profile(&found).await;
            found
        }
    };
    let visible = match target.role {
        Role::Seller => true,
        Role::Buyer if target.id == who.id => true,
        Role::Buyer => who.role == Role::Seller && has_paid_order(&app, target.id.as_str(), who.id.as_str()).await?,
    };
    if !visible {
        return Err(ApiError::forbidden("a buyer's profile is visible only to sellers they have paid"));
    }
    Ok(json(StatusCode::OK, &target))
}
