//! Accounts and tokens: signup, login, refresh, logout and profile bodies.

use crate::ids::UserId;
use crate::values::Role;
use serde::{Deserialize, Serialize};

/// `POST /auth/signup`. Fields arrive raw and are validated into domain values by the front end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct SignupRequest {
    /// The address to log in with; normalised before use.
    pub email: String,
    /// At least 8 characters.
    pub password: String,
    /// `BUYER` or `SELLER`.
    pub role: String,
    /// A display name; defaults to the e-mail's local part.
    #[serde(default)]
    pub name: Option<String>,
}

/// `POST /auth/login`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct LoginRequest {
    /// The address given at signup (any case, any surrounding spaces).
    pub email: String,
    /// The password given at signup.
    pub password: String,
}

/// `POST /auth/refresh` and `POST /auth/logout`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct RefreshRequest {
    /// The refresh token from the last login or refresh.
    pub refresh_token: String,
}

/// The answer to a login or refresh.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct TokenPair {
    /// A short-lived HS256 JWT for the `Authorization: Bearer` header.
    pub access_token: String,
    /// A single-use token that buys the next pair.
    pub refresh_token: String,
    /// Seconds until the access token expires.
    pub expires_in: u64,
}

/// A user's public profile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct UserView {
    /// The account's id.
    pub id: UserId,
    /// The normalised e-mail address.
    pub email: String,
    /// What the account may do.
    pub role: Role,
    /// The display name.
    pub name: String,
}

/// The claims of an access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user id.
    pub sub: String,
    /// The user's role, so routes can refuse without a lookup.
    pub role: Role,
    /// Expiry, seconds since the epoch.
    pub exp: i64,
    /// Issue time, seconds since the epoch.
    pub iat: i64,
    /// A unique token id.
    pub jti: String,
    /// The session (refresh-token family) the token was issued in; revoking the session (logout,
    /// a refresh token presented twice) revokes the token. Absent in tokens issued before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
}
