//! Synthetic data for demos and benchmarks: customers with interactions, inserted in batches.

use crate::{Db, StoreResult, customers, interactions};
use chrono::{DateTime, Duration, Utc};
use crm_domain::{
    CountryCode, Customer, CustomerId, CustomerStatus, Direction, Email, Interaction,
    InteractionId, InteractionKind, Language, Phone, Tag, TimeZone,
};

/// Customers per transaction.
const BATCH: usize = 2_000;

const FIRST: [&str; 12] = [
    "Ana", "Jürgen", "Đorđe", "Emina", "Max", "Lena", "Milan", "Sara", "Tarik", "Jovana", "Lukas",
    "Amra",
];
const LAST: [&str; 10] = [
    "Müller",
    "Hodžić",
    "Petrović",
    "Schmidt",
    "Kovačević",
    "Weber",
    "Begić",
    "Jovanović",
    "Fischer",
    "Delić",
];
const LANGS: [(&str, &str, &str, &str); 4] = [
    ("de", "DE", "Europe/Berlin", "+4930"),
    ("bs", "BA", "Europe/Sarajevo", "+38733"),
    ("sr", "RS", "Europe/Belgrade", "+38111"),
    ("en", "GB", "Europe/London", "+44207"),
];
const OUTCOMES: [&str; 5] = [
    "interested",
    "no_answer",
    "callback",
    "appointment",
    "not_interested",
];

/// What was seeded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SeedReport {
    /// Customers inserted.
    pub customers: usize,
    /// Interactions inserted.
    pub interactions: usize,
}

/// Inserts `customers` synthetic customers with `per_customer` interactions each, created in
/// the year before `now`. Emails and phones are unique per `run` (a tag for this seeding run),
/// so seeding twice with different runs does not collide. `progress` is called after each batch
/// with the number of customers inserted so far.
pub async fn seed(
    db: &Db,
    run: u32,
    customers: usize,
    per_customer: usize,
    now: DateTime<Utc>,
    mut progress: impl FnMut(usize),
) -> StoreResult<SeedReport> {
    let mut report = SeedReport::default();
    let span = Duration::days(365).num_seconds();
    let total = i64::try_from(customers.max(1)).unwrap_or(i64::MAX);
    let mut start = 0;
    while start < customers {
        let end = (start + BATCH).min(customers);
        let mut batch = Vec::with_capacity(end - start);
        let mut logged = Vec::with_capacity((end - start) * per_customer);
        for n in start..end {
            let i = i64::try_from(n).unwrap_or(i64::MAX);
            let created = now - Duration::seconds(span - span * i / total);
            let customer = synthetic_customer(run, n, created);
            for k in 0..per_customer {
                let k64 = i64::try_from(k).unwrap_or(0);
                logged.push(synthetic_interaction(
                    customer.id,
                    k,
                    created + Duration::hours(k64 * 26 + 1),
                ));
            }
            batch.push(customer);
        }
        customers::insert_batch(db, &batch).await?;
        interactions::insert_batch(db, &logged).await?;
        report.customers += batch.len();
        report.interactions += logged.len();
        progress(report.customers);
        start = end;
    }
    Ok(report)
}

fn synthetic_customer(run: u32, n: usize, created: DateTime<Utc>) -> Customer {
    let (lang, country, zone, prefix) = LANGS[n % LANGS.len()];
    let first = FIRST[n % FIRST.len()];
    let last = LAST[(n / FIRST.len()) % LAST.len()];
    let mut tags = vec![Tag::from_stored(format!("seed-{run}"))];
    if n.is_multiple_of(7) {
        tags.push(Tag::from_stored("vip".into()));
    }
    Customer {
        id: CustomerId::new(),
        name: format!("{first} {last}"),
        email: Some(Email::from_stored(format!("lead{n}.r{run}@example.com"))),
        // Synthetic, unique per (run, n); not necessarily a callable number.
        phone: Some(Phone::from_stored(format!("{prefix}{run:02}{n:08}"))),
        company: (!n.is_multiple_of(3)).then(|| format!("{last} {} d.o.o.", n % 997)),
        status: CustomerStatus::ALL[n % 4],
        source: Some(["website", "partner", "import", "fair"][n % 4].into()),
        language: Some(Language::from_stored(lang.into())),
        country: Some(CountryCode::from_stored(country.into())),
        time_zone: TimeZone::parse(zone).ok(),
        owner: Some(format!("sales{}", n % 10)),
        tags,
        consent_email: n.is_multiple_of(2),
        consent_call: n % 3 != 1,
        consent_sms: false,
        notes: None,
        created_at: created,
        updated_at: created,
        deleted_at: None,
    }
}

fn synthetic_interaction(customer_id: CustomerId, k: usize, at: DateTime<Utc>) -> Interaction {
    let kind = InteractionKind::ALL[k % InteractionKind::ALL.len()];
    Interaction {
        id: InteractionId::new(),
        customer_id,
        kind,
        direction: Some(if k.is_multiple_of(2) {
            Direction::Outbound
        } else {
            Direction::Inbound
        }),
        subject: Some(format!("{kind} #{k}")),
        body: Some("Synthetic interaction created by `crm-server seed`.".into()),
        outcome: Some(OUTCOMES[k % OUTCOMES.len()].into()),
        occurred_at: at,
        duration_seconds: (kind == InteractionKind::Call)
            .then_some(60 + i32::try_from(k % 600).unwrap_or(0)),
        author: Some("seed".into()),
        created_at: at,
        updated_at: at,
    }
}
