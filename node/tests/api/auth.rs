//! Accounts and tokens: `/auth/*`, the visibility rule and the login rate limit.

use crate::support::*;
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn signing_up_returns_the_profile_and_no_secret() {
    let node = TestNode::spawn().await;
    let email = unique_email();
    let reply =
        node.post("/auth/signup", json!({"email": email, "password": PASSWORD, "role": "SELLER", "name": "Ann"})).await;
    let text = reply.text.clone();
    let profile = reply.expect(201);
    assert!(profile["id"].as_str().is_some_and(|id| !id.is_empty()), "{profile}");
    assert_eq!(profile["email"], email.as_str());
    assert_eq!(profile["role"], "SELLER");
    assert_eq!(profile["name"], "Ann");
    // Neither the password nor its hash may ever leave the node.
    assert!(!text.contains(PASSWORD), "{text}");
    assert!(!text.to_lowercase().contains("argon2"), "{text}");
    assert!(profile.get("password").is_none() && profile.get("passwordHash").is_none());
}

#[tokio::test]
async fn signing_up_without_a_name_still_gives_a_name() {
    let node = TestNode::spawn().await;
    let profile = node
        .post("/auth/signup", json!({"email": unique_email(), "password": PASSWORD, "role": "BUYER"}))
        .await
        .expect(201);
    assert!(profile["name"].is_string(), "{profile}");
}

#[tokio::test]
async fn signing_up_normalises_the_email_and_login_accepts_any_case() {
    let node = TestNode::spawn().await;
    let local = format!("Ann.{}", uuid::Uuid::new_v4().simple());
    let raw = format!("  {local}@Example.COM ");
    let normalised = format!("{}@example.com", local.to_lowercase());
    let profile =
        node.post("/auth/signup", json!({"email": raw, "password": PASSWORD, "role": "BUYER"})).await.expect(201);
    assert_eq!(profile["email"], normalised.as_str());
    let pair = node
        .post("/auth/login", json!({"email": format!("{}@EXAMPLE.com", local.to_uppercase()), "password": PASSWORD}))
        .await
        .expect(200);
    assert!(pair["accessToken"].is_string());
}

#[tokio::test]
async fn signing_up_twice_with_one_email_is_email_taken() {
    let node = TestNode::spawn().await;
    let email = unique_email();
    node.post("/auth/signup", json!({"email": email, "password": PASSWORD, "role": "BUYER"})).await.expect(201);
    node.post("/auth/signup", json!({"email": email, "password": PASSWORD, "role": "SELLER"}))
        .await
        .expect_error(409, "email_taken");
    // The same address in other letters is the same account.
    node.post("/auth/signup", json!({"email": email.to_uppercase(), "password": PASSWORD, "role": "BUYER"}))
        .await
        .expect_error(409, "email_taken");
}

#[tokio::test]
async fn a_short_password_is_invalid_and_named() {
    let node = TestNode::spawn().await;
    node.post("/auth/signup", json!({"email": unique_email(), "password": "1234567", "role": "BUYER"}))
        .await
        .expect_error_naming(422, "invalid", "password");
}

#[tokio::test]
async fn an_eight_character_password_is_enough() {
    let node = TestNode::spawn().await;
    node.post("/auth/signup", json!({"email": unique_email(), "password": "12345678", "role": "BUYER"}))
        .await
        .expect(201);
}

#[tokio::test]
async fn a_malformed_email_is_invalid_and_named() {
    let node = TestNode::spawn().await;
    for bad in ["ann", "ann@", "@example.com", "ann@example", "a b@example.com"] {
        node.post("/auth/signup", json!({"email": bad, "password": PASSWORD, "role": "BUYER"}))
            .await
            .expect_error_naming(422, "invalid", "email");
    }
}

#[tokio::test]
async fn a_role_other_than_buyer_or_seller_is_invalid_and_named() {
    let node = TestNode::spawn().await;
    for bad in ["ADMIN", "buyer", ""] {
        node.post("/auth/signup", json!({"email": unique_email(), "password": PASSWORD, "role": bad}))
            .await
            .expect_error_naming(422, "invalid", "role");
    }
}

#[tokio::test]
async fn a_signup_without_a_password_is_a_bad_request_naming_it() {
    let node = TestNode::spawn().await;
    node.post("/auth/signup", json!({"email": unique_email(), "role": "BUYER"})).await.expect_error_naming(
        400,
        "bad_request",
        "password",
    );
}

#[tokio::test]
async fn logging_in_returns_a_token_pair_with_the_documented_claims() {
    let node = TestNode::spawn().await;
    let user = node.signup(Role::Buyer).await;
    let pair = node.post("/auth/login", json!({"email": user.email, "password": PASSWORD})).await.expect(200);
    let access = pair["accessToken"].as_str().expect("accessToken");
    assert!(pair["refreshToken"].as_str().is_some_and(|t| !t.is_empty()), "{pair}");
    let expires_in = pair["expiresIn"].as_u64().expect("expiresIn is a number");
    // The default lifetime is 15 minutes.
    assert!((1..=900).contains(&expires_in), "{pair}");
    assert_eq!(access.split('.').count(), 3, "a JWT: {access}");
    let claims = jwt_claims(access);
    assert_eq!(claims["sub"], user.id.as_str(), "{claims}");
    assert_eq!(claims["role"], "BUYER", "{claims}");
    let (exp, iat) = (claims["exp"].as_i64().unwrap(), claims["iat"].as_i64().unwrap());
    assert!(exp > iat, "{claims}");
    assert!(claims["jti"].as_str().is_some_and(|j| !j.is_empty()), "{claims}");
}

#[tokio::test]
async fn a_wrong_password_and_an_unknown_email_are_refused_alike() {
    let node = TestNode::spawn().await;
    let user = node.signup(Role::Buyer).await;
    let wrong_password = node.post("/auth/login", json!({"email": user.email, "password": "not the password"})).await;
    let unknown_email = node.post("/auth/login", json!({"email": unique_email(), "password": PASSWORD})).await;
    wrong_password.expect_error(401, "unauthorized");
    unknown_email.expect_error(401, "unauthorized");
    // Telling the two apart would let anyone probe which addresses have accounts.
    assert_eq!(wrong_password.message(), unknown_email.message());
}

#[tokio::test]
async fn refreshing_returns_a_new_pair_that_works() {
    let node = TestNode::spawn().await;
    let user = node.signup(Role::Seller).await;
    let pair = node.post("/auth/refresh", json!({"refreshToken": user.refresh_token})).await.expect(200);
    let access = pair["accessToken"].as_str().expect("accessToken");
    let refresh = pair["refreshToken"].as_str().expect("refreshToken");
    assert_ne!(refresh, user.refresh_token);
    assert!(pair["expiresIn"].as_u64().is_some(), "{pair}");
    let me = node.send(reqwest::Method::GET, "/auth/me", Some(access), Body::None, &[]).await.expect(200);
    assert_eq!(me["id"], user.id.as_str());
}

#[tokio::test]
async fn a_spent_refresh_token_revokes_its_whole_family() {
    let node = TestNode::spawn().await;
    let user = node.signup(Role::Buyer).await;
    let first = user.refresh_token.clone();
    let second = node.post("/auth/refresh", json!({"refreshToken": first})).await.expect(200)["refreshToken"]
        .as_str()
        .expect("refreshToken")
        .to_owned();
    // Replaying the spent token looks like theft: it fails and takes its successors down.
    node.post("/auth/refresh", json!({"refreshToken": first})).await.expect_error(401, "unauthorized");
    node.post("/auth/refresh", json!({"refreshToken": second})).await.expect_error(401, "unauthorized");
}

#[tokio::test]
async fn refreshing_with_an_unknown_token_is_unauthorized() {
    let node = TestNode::spawn().await;
    node.post("/auth/refresh", json!({"refreshToken": "not-a-token"})).await.expect_error(401, "unauthorized");
}

#[tokio::test]
async fn refreshing_without_a_token_field_is_a_bad_request() {
    let node = TestNode::spawn().await;
    node.post("/auth/refresh", json!({})).await.expect_error_naming(400, "bad_request", "refreshToken");
}

#[tokio::test]
async fn logging_out_revokes_the_refresh_family() {
    let node = TestNode::spawn().await;
    let user = node.signup(Role::Buyer).await;
    let reply = user.post("/auth/logout", json!({"refreshToken": user.refresh_token})).await;
    assert_eq!(reply.status, 204, "{}", reply.text);
    node.post("/auth/refresh", json!({"refreshToken": user.refresh_token})).await.expect_error(401, "unauthorized");
}

#[tokio::test]
async fn logging_out_without_a_bearer_token_is_unauthorized() {
    let node = TestNode::spawn().await;
    let user = node.signup(Role::Buyer).await;
    node.post("/auth/logout", json!({"refreshToken": user.refresh_token})).await.expect_error(401, "unauthorized");
    // The family is untouched by the refused call.
    node.post("/auth/refresh", json!({"refreshToken": user.refresh_token})).await.expect(200);
}

#[tokio::test]
async fn me_returns_the_callers_profile() {
    let node = TestNode::spawn().await;
    let user = node.signup(Role::Seller).await;
    let me = user.get("/auth/me").await.expect(200);
    assert_eq!(me["id"], user.id.as_str());
    assert_eq!(me["email"], user.email.as_str());
    assert_eq!(me["role"], "SELLER");
    assert!(me["name"].is_string());
}

#[tokio::test]
async fn me_refuses_missing_malformed_and_forged_tokens() {
    let node = TestNode::spawn().await;
    let user = node.signup(Role::Buyer).await;
    node.get("/auth/me").await.expect_error(401, "unauthorized");

    let mut parts = user.access_token.split('.');
    let (header, payload, signature) = (parts.next().unwrap(), parts.next().unwrap(), parts.next().unwrap());
    let mut claims = jwt_claims(&user.access_token);
    claims["role"] = json!("SELLER");
    let tampered = format!("{header}.{}.{signature}", base64url_encode(claims.to_string().as_bytes()));
    let unsigned = format!("{}.{payload}.", base64url_encode(br#"{"alg":"none","typ":"JWT"}"#));
    let flipped_signature =
        format!("{header}.{payload}.{}", base64url_encode(b"definitely not the signature of this token"));
    for token in ["garbage", "a.b.c", "", tampered.as_str(), unsigned.as_str(), flipped_signature.as_str()] {
        node.send(reqwest::Method::GET, "/auth/me", Some(token), Body::None, &[])
            .await
            .expect_error(401, "unauthorized");
    }
    // A scheme other than Bearer is no token at all.
    let basic = format!("Basic {}", user.access_token);
    node.send(reqwest::Method::GET, "/auth/me", None, Body::None, &[("authorization", basic.as_str())])
        .await
        .expect_error(401, "unauthorized");
}

#[tokio::test]
async fn an_expired_access_token_is_unauthorized_but_refresh_still_works() {
    let node = TestNode::spawn_with(&[("BAZAAR_ACCESS_TOKEN_TTL_SECS", "2")]).await;
    let email = unique_email();
    node.post("/auth/signup", json!({"email": email, "password": PASSWORD, "role": "BUYER"})).await.expect(201);
    let pair = node.post("/auth/login", json!({"email": email, "password": PASSWORD})).await.expect(200);
    let expires_in = pair["expiresIn"].as_u64().expect("expiresIn");
    assert!((1..=2).contains(&expires_in), "the configured TTL is 2 s: {pair}");
    let access = pair["accessToken"].as_str().unwrap().to_owned();
    let refresh = pair["refreshToken"].as_str().unwrap().to_owned();
    eventually(Duration::from_secs(10), "the access token to expire", || async {
        let reply = node.send(reqwest::Method::GET, "/auth/me", Some(&access), Body::None, &[]).await;
        match reply.status {
            401 => Ok(reply),
            _ => Err(format!("HTTP {} {}", reply.status, reply.text)),
        }
    })
    .await
    .expect_error(401, "unauthorized");
    // Refresh tokens outlive access tokens; that is their point.
    let fresh = node.post("/auth/refresh", json!({"refreshToken": refresh})).await.expect(200);
    node.send(reqwest::Method::GET, "/auth/me", fresh["accessToken"].as_str(), Body::None, &[]).await.expect(200);
}

#[tokio::test]
async fn anyone_authenticated_may_read_a_sellers_profile() {
    let node = TestNode::spawn().await;
    let seller = node.signup(Role::Seller).await;
    let buyer = node.signup(Role::Buyer).await;
    let other_seller = node.signup(Role::Seller).await;
    for reader in [&buyer, &other_seller, &seller] {
        let profile = reader.get(&format!("/auth/user/{}", seller.id)).await.expect(200);
        assert_eq!(profile["id"], seller.id.as_str());
        assert_eq!(profile["role"], "SELLER");
        assert_eq!(profile["email"], seller.email.as_str());
        assert!(profile["name"].is_string());
    }
}

#[tokio::test]
async fn a_buyer_may_read_its_own_profile() {
    let node = TestNode::spawn().await;
    let buyer = node.signup(Role::Buyer).await;
    let profile = buyer.get(&format!("/auth/user/{}", buyer.id)).await.expect(200);
    assert_eq!(profile["role"], "BUYER");
}

#[tokio::test]
async fn a_buyers_profile_is_forbidden_to_other_buyers() {
    let node = TestNode::spawn().await;
    let buyer = node.signup(Role::Buyer).await;
    let other = node.signup(Role::Buyer).await;
    other.get(&format!("/auth/user/{}", buyer.id)).await.expect_error(403, "forbidden");
}

#[tokio::test]
async fn a_seller_may_read_a_buyers_profile_only_after_a_paid_order() {
    let node = TestNode::spawn().await;
    let (seller, product, buyer) = node.seller_product_buyer(1000, 5).await;
    let stranger_seller = node.signup(Role::Seller).await;
    let path = format!("/auth/user/{}", buyer.id);
    seller.get(&path).await.expect_error(403, "forbidden");

    // An order that is merely placed does not open the profile.
    let order = buyer.place_order(product["id"].as_str().unwrap(), 1).await;
    let order_id = order["id"].as_str().unwrap();
    seller.get(&path).await.expect_error(403, "forbidden");

    buyer.pay_ok(order_id, "tok_visa").await;
    buyer.wait_for_order_status(order_id, "PAID", EVENT_DEADLINE).await;
    let profile = eventually(EVENT_DEADLINE, "the seller to see the buyer", || async {
        let reply = seller.get(&path).await;
        match reply.status {
            200 => Ok(reply.json),
            _ => Err(format!("HTTP {} {}", reply.status, reply.text)),
        }
    })
    .await;
    assert_eq!(profile["id"], buyer.id.as_str());
    assert_eq!(profile["role"], "BUYER");
    stranger_seller.get(&path).await.expect_error(403, "forbidden");
}

#[tokio::test]
async fn an_unknown_user_is_not_found() {
    let node = TestNode::spawn().await;
    let user = node.signup(Role::Seller).await;
    user.get(&format!("/auth/user/{}", uuid::Uuid::now_v7())).await.expect_error(404, "not_found");
}

#[tokio::test]
async fn reading_a_profile_without_a_token_is_unauthorized() {
    let node = TestNode::spawn().await;
    let seller = node.signup(Role::Seller).await;
    node.get(&format!("/auth/user/{}", seller.id)).await.expect_error(401, "unauthorized");
}

#[tokio::test]
async fn too_many_logins_for_one_email_are_rate_limited() {
    let node = TestNode::spawn_with(&[("BAZAAR_LOGIN_ATTEMPTS_PER_MINUTE", "5")]).await;
    let user = node.signup(Role::Buyer).await; // spends one attempt on its own login
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses
            .push(node.post("/auth/login", json!({"email": user.email, "password": "wrong password"})).await.status);
    }
    assert_eq!(statuses, [401, 401, 401, 401]);
    // The sixth attempt within the minute is refused even with the right password.
    let limited = node.post("/auth/login", json!({"email": user.email, "password": PASSWORD})).await;
    limited.expect_error(429, "rate_limited");
    let retry_after = limited.header("retry-after").expect("a Retry-After header");
    let seconds: u64 = retry_after.parse().unwrap_or_else(|_| panic!("Retry-After is seconds: {retry_after}"));
    assert!((1..=60).contains(&seconds), "Retry-After {seconds}");
    // The limit is per e-mail: others log in as usual.
    let other = node.signup(Role::Buyer).await;
    node.post("/auth/login", json!({"email": other.email, "password": PASSWORD})).await.expect(200);
}

#[tokio::test]
async fn the_login_limit_counts_an_email_in_any_case() {
    let node = TestNode::spawn_with(&[("BAZAAR_LOGIN_ATTEMPTS_PER_MINUTE", "5")]).await;
    let user = node.signup(Role::Buyer).await;
    for attempt in 0..4 {
        // Changing the letters must not buy fresh attempts: the limit keys the normalised address.
        let spelled = if attempt % 2 == 0 { user.email.to_uppercase() } else { format!(" {} ", user.email) };
        node.post("/auth/login", json!({"email": spelled, "password": "wrong password"}))
            .await
            .expect_error(401, "unauthorized");
    }
    node.post("/auth/login", json!({"email": user.email, "password": PASSWORD}))
        .await
        .expect_error(429, "rate_limited");
}

#[tokio::test]
async fn a_refreshed_pair_reports_the_configured_lifetime() {
    let node = TestNode::spawn_with(&[("BAZAAR_ACCESS_TOKEN_TTL_SECS", "120")]).await;
    let user = node.signup(Role::Buyer).await;
    let pair = node.post("/auth/refresh", json!({"refreshToken": user.refresh_token})).await.expect(200);
    let expires_in = pair["expiresIn"].as_u64().expect("expiresIn");
    assert!((118..=120).contains(&expires_in), "{pair}");
    let claims = jwt_claims(pair["accessToken"].as_str().unwrap());
    assert_eq!(claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(), 120, "{claims}");
    assert_ne!(claims["jti"], jwt_claims(&user.access_token)["jti"], "each token has its own id");
}
