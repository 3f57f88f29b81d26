//! Rate limits: token buckets (GCRA, the `governor` crate) per client IP — checked before
//! authentication, so credential stuffing is slowed too — and per authenticated principal.
//! A refused request gets HTTP 429, `extensions.code = RATE_LIMITED`, `Retry-After` and the
//! `RateLimit-Limit/Remaining/Reset` headers of the IETF draft.

use crate::config::RateLimitConfig;
use governor::{
    Quota, RateLimiter,
    clock::{Clock as _, DefaultClock},
    middleware::StateInformationMiddleware,
    state::keyed::DefaultKeyedStateStore,
};
use std::{hash::Hash, net::IpAddr, num::NonZeroU32, sync::Arc, time::Duration};

type Keyed<K> = RateLimiter<K, DefaultKeyedStateStore<K>, DefaultClock, StateInformationMiddleware>;

/// What a refused request is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    /// The bucket size.
    pub limit: u32,
    /// When to try again.
    pub retry_after: Duration,
}

/// The limiters of one server.
#[derive(Clone)]
pub struct RateLimits {
    per_ip: Option<Arc<Keyed<IpAddr>>>,
    per_principal: Option<Arc<Keyed<String>>>,
    per_form: Option<Arc<Keyed<String>>>,
    ip_burst: u32,
    principal_burst: u32,
    form_burst: u32,
}

impl std::fmt::Debug for RateLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimits")
            .field("per_ip", &self.per_ip.is_some())
            .field("per_principal", &self.per_principal.is_some())
            .finish()
    }
}

fn limiter<K: Clone + Hash + Eq>(per_minute: u32, burst: u32) -> Option<Arc<Keyed<K>>> {
    let per_minute = NonZeroU32::new(per_minute)?;
    let burst = NonZeroU32::new(burst).unwrap_or(per_minute);
    Some(Arc::new(
        RateLimiter::keyed(Quota::per_minute(per_minute).allow_burst(burst)).with_middleware(),
    ))
}

fn check<K: Clone + Hash + Eq>(limiter: &Keyed<K>, key: &K, burst: u32) -> Result<(), Refusal> {
    limiter
        .check_key(key)
        .map(|_| ())
        .map_err(|not_until| Refusal {
            limit: burst,
            retry_after: not_until.wait_time_from(DefaultClock::default().now()),
        })
}

impl RateLimits {
    /// Builds the limiters; a rate of 0 turns that limit off.
    pub fn new(config: &RateLimitConfig) -> Self {
        let (ip, principal, form) = if config.enabled {
            (
                limiter(config.per_ip_per_minute, config.per_ip_burst),
                limiter(config.per_principal_per_minute, config.per_principal_burst),
                limiter(
                    config.form_submissions_per_minute,
                    config.form_submissions_burst,
                ),
            )
        } else {
            (None, None, None)
        };
        Self {
            per_ip: ip,
            per_principal: principal,
            per_form: form,
            ip_burst: config.per_ip_burst,
            principal_burst: config.per_principal_burst,
            form_burst: config.form_submissions_burst,
        }
    }

    /// Takes one token for a client address.
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), Refusal> {
        self.per_ip
            .as_ref()
            .map_or(Ok(()), |l| check(l, &ip, self.ip_burst))
    }

    /// Takes one token for an authenticated principal (`subject` plus how it authenticated).
    pub fn check_principal(&self, key: &str) -> Result<(), Refusal> {
        self.per_principal
            .as_ref()
            .map_or(Ok(()), |l| check(l, &key.to_owned(), self.principal_burst))
    }

    /// Takes one token for a submission of `form` from a client address.
    pub fn check_form(&self, form: &str, ip: IpAddr) -> Result<(), Refusal> {
        self.per_form.as_ref().map_or(Ok(()), |l| {
            check(l, &format!("{form}|{ip}"), self.form_burst)
        })
    }

    /// Forgets idle buckets; call periodically so the maps do not grow without bound.
    pub fn prune(&self) {
        if let Some(l) = &self.per_ip {
            l.retain_recent();
            l.shrink_to_fit();
        }
        for l in [&self.per_principal, &self.per_form].into_iter().flatten() {
            l.retain_recent();
            l.shrink_to_fit();
        }
    }
}
