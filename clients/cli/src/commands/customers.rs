//! `crm customers` and `crm customer …`: listing and managing customers.

use anyhow::{bail, ensure};
use clap::{Args, Subcommand, ValueEnum};
use serde::Serialize;
use serde_json::{Value, json};

use super::{Context, PageArgs, variables};
use crate::output::{self, Connection, Customer};

const LIST: &str = concat!(
    "query Customers($filter: CustomerFilter, $first: Int, $after: String) { \
     customers(filter: $filter, first: $first, after: $after) { \
     nodes { ...CustomerFields } pageInfo { hasNextPage endCursor } } } ",
    customer_fields!()
);
const GET: &str = concat!(
    "query Customer($id: ID!, $interactions: Int) { customer(id: $id) { \
     ...CustomerFields interactions(first: $interactions) { ...InteractionFields } } } ",
    customer_fields!(),
    " ",
    interaction_fields!()
);
const CREATE: &str = concat!(
    "mutation CreateCustomer($input: CreateCustomerInput!) { \
     createCustomer(input: $input) { ...CustomerFields } } ",
    customer_fields!()
);
const UPDATE: &str = concat!(
    "mutation UpdateCustomer($id: ID!, $input: UpdateCustomerInput!) { \
     updateCustomer(id: $id, input: $input) { ...CustomerFields } } ",
    customer_fields!()
);
const DELETE: &str = concat!(
    "mutation DeleteCustomer($id: ID!) { deleteCustomer(id: $id) { ...CustomerFields } } ",
    customer_fields!()
);
const RESTORE: &str = concat!(
    "mutation RestoreCustomer($id: ID!) { restoreCustomer(id: $id) { ...CustomerFields } } ",
    customer_fields!()
);

/// Lifecycle stage of a customer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub(crate) enum CustomerStatus {
    Lead,
    Prospect,
    Customer,
    Churned,
}

/// Flags of `crm customers`.
#[derive(Debug, Args, Serialize)]
pub(crate) struct ListArgs {
    #[command(flatten)]
    filter: FilterArgs,
    #[command(flatten)]
    #[serde(flatten)]
    page: PageArgs,
}

#[derive(Debug, Args, Serialize)]
#[serde(rename_all = "camelCase")]
struct FilterArgs {
    /// Search text, matched against name, email, phone and company.
    #[arg(long)]
    text: Option<String>,
    /// Only customers with this status.
    #[arg(long, value_enum, ignore_case = true)]
    status: Option<CustomerStatus>,
    /// Only customers carrying this tag.
    #[arg(long)]
    tag: Option<String>,
    /// Only customers owned by this user.
    #[arg(long)]
    owner: Option<String>,
    /// Only customers created at or after this time (RFC 3339).
    #[arg(long, value_name = "RFC3339")]
    created_after: Option<String>,
    /// Only customers created before this time (RFC 3339).
    #[arg(long, value_name = "RFC3339")]
    created_before: Option<String>,
    /// Also list deleted customers.
    #[arg(long)]
    include_deleted: bool,
}

impl ListArgs {
    /// Lists one page of customers.
    pub(crate) async fn run(self, ctx: &Context) -> anyhow::Result<()> {
        ctx.show(
            LIST,
            variables(&self),
            "customers",
            |page: Connection<Customer>| Ok(output::customer_list(&page)),
        )
        .await
    }
}

/// `crm customer` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum CustomerCommand {
    /// Show a customer and its latest interactions.
    Get {
        /// Id of the customer.
        id: String,
        /// How many interactions to show.
        #[arg(long, value_name = "N", default_value_t = 10, value_parser = clap::value_parser!(i32).range(0..))]
        interactions: i32,
    },
    /// Create a customer.
    Create(CreateArgs),
    /// Update a customer; only the fields given as flags change.
    Update(UpdateArgs),
    /// Delete a customer (soft delete: `crm customer restore` undoes it).
    Delete {
        /// Id of the customer.
        id: String,
    },
    /// Restore a deleted customer.
    Restore {
        /// Id of the customer.
        id: String,
    },
}

impl CustomerCommand {
    /// Runs the subcommand.
    pub(crate) async fn run(self, ctx: &Context) -> anyhow::Result<()> {
        match self {
            Self::Get { id, interactions } => {
                let vars = json!({ "id": id, "interactions": interactions });
                ctx.show(
                    GET,
                    vars,
                    "customer",
                    |customer: Option<Customer>| match customer {
                        Some(customer) => Ok(output::customer(&customer)),
                        None => bail!("no customer with id {id}"),
                    },
                )
                .await
            }
            Self::Create(args) => {
                ctx.show(CREATE, args.variables(), "createCustomer", |c: Customer| {
                    Ok(format!(
                        "Created customer {}.\n\n{}",
                        c.id,
                        output::customer(&c)
                    ))
                })
                .await
            }
            Self::Update(args) => {
                ctx.show(
                    UPDATE,
                    args.variables()?,
                    "updateCustomer",
                    |c: Customer| {
                        Ok(format!(
                            "Updated customer {}.\n\n{}",
                            c.id,
                            output::customer(&c)
                        ))
                    },
                )
                .await
            }
            Self::Delete { id } => {
                ctx.show(
                    DELETE,
                    json!({ "id": id }),
                    "deleteCustomer",
                    |c: Customer| {
                        Ok(format!(
                            "Deleted customer {} ({}); `crm customer restore {}` undoes it.",
                            c.id, c.name, c.id
                        ))
                    },
                )
                .await
            }
            Self::Restore { id } => {
                ctx.show(
                    RESTORE,
                    json!({ "id": id }),
                    "restoreCustomer",
                    |c: Customer| Ok(format!("Restored customer {} ({}).", c.id, c.name)),
                )
                .await
            }
        }
    }
}

/// Flags of `crm customer create`.
#[derive(Debug, Args, Serialize)]
pub(crate) struct CreateArgs {
    /// Full name of the customer.
    #[arg(long)]
    name: String,
    #[command(flatten)]
    #[serde(flatten)]
    fields: CustomerFields,
}

impl CreateArgs {
    fn variables(&self) -> Value {
        variables(&json!({ "input": self }))
    }
}

/// Flags of `crm customer update`.
#[derive(Debug, Args, Serialize)]
pub(crate) struct UpdateArgs {
    /// Id of the customer.
    #[serde(skip)]
    id: String,
    /// New full name.
    #[arg(long)]
    name: Option<String>,
    #[command(flatten)]
    #[serde(flatten)]
    fields: CustomerFields,
}

impl UpdateArgs {
    /// `{id, input}` where `input` holds only the flags that were given.
    fn variables(&self) -> anyhow::Result<Value> {
        let vars = variables(&json!({ "id": self.id, "input": self }));
        ensure!(
            vars["input"]
                .as_object()
                .is_some_and(|input| !input.is_empty()),
            "nothing to update: give at least one field flag (see `crm customer update --help`)"
        );
        Ok(vars)
    }
}

/// Optional customer fields shared by `create` and `update`.
#[derive(Debug, Args, Serialize)]
#[serde(rename_all = "camelCase")]
struct CustomerFields {
    /// Email address.
    #[arg(long)]
    email: Option<String>,
    /// Phone number, preferably E.164 (e.g. +33612345678).
    #[arg(long)]
    phone: Option<String>,
    /// Company the customer works for.
    #[arg(long)]
    company: Option<String>,
    /// Lifecycle stage.
    #[arg(long, value_enum, ignore_case = true)]
    status: Option<CustomerStatus>,
    /// Where the customer came from (e.g. website, referral).
    #[arg(long)]
    source: Option<String>,
    /// Preferred language (e.g. en, fr-CA).
    #[arg(long)]
    language: Option<String>,
    /// Country code (e.g. FR).
    #[arg(long)]
    country: Option<String>,
    /// IANA time zone (e.g. Europe/Paris).
    #[arg(long)]
    time_zone: Option<String>,
    /// User responsible for the customer.
    #[arg(long)]
    owner: Option<String>,
    /// Tag; repeat for several. On update, replaces all existing tags.
    #[arg(long = "tag", value_name = "TAG")]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tags: Vec<String>,
    /// Whether the customer agreed to be emailed.
    #[arg(long, value_name = "BOOL")]
    consent_email: Option<bool>,
    /// Whether the customer agreed to be called.
    #[arg(long, value_name = "BOOL")]
    consent_call: Option<bool>,
    /// Whether the customer agreed to receive text messages.
    #[arg(long, value_name = "BOOL")]
    consent_sms: Option<bool>,
    /// Free-form notes.
    #[arg(long)]
    notes: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::{Command, parse};

    fn customer_command(args: &[&str]) -> CustomerCommand {
        let mut line = vec!["customer"];
        line.extend(args);
        match parse(&line) {
            Command::Customer(command) => command,
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn list_sends_only_given_filters() {
        let Command::Customers(args) = parse(&[
            "customers",
            "--status",
            "LEAD",
            "--tag",
            "vip",
            "--first",
            "5",
            "--include-deleted",
        ]) else {
            panic!("not a customers command");
        };
        assert_eq!(
            variables(&args),
            json!({
                "filter": {"status": "LEAD", "tag": "vip", "includeDeleted": true},
                "first": 5,
            })
        );
    }

    #[test]
    fn create_sends_name_and_given_fields() {
        let CustomerCommand::Create(args) = customer_command(&[
            "create",
            "--name",
            "Ada",
            "--email",
            "ada@example.com",
            "--status",
            "prospect",
            "--time-zone",
            "Europe/London",
            "--tag",
            "a",
            "--tag",
            "b",
            "--consent-email",
            "true",
        ]) else {
            panic!("not a create command");
        };
        assert_eq!(
            args.variables(),
            json!({"input": {
                "name": "Ada",
                "email": "ada@example.com",
                "status": "PROSPECT",
                "timeZone": "Europe/London",
                "tags": ["a", "b"],
                "consentEmail": true,
            }})
        );
    }

    #[test]
    fn update_sends_only_given_flags() {
        let CustomerCommand::Update(args) = customer_command(&[
            "update",
            "c1",
            "--phone",
            "+33612345678",
            "--consent-sms",
            "false",
        ]) else {
            panic!("not an update command");
        };
        assert_eq!(
            args.variables().unwrap(),
            json!({"id": "c1", "input": {"phone": "+33612345678", "consentSms": false}})
        );
    }

    #[test]
    fn update_without_flags_is_refused() {
        let CustomerCommand::Update(args) = customer_command(&["update", "c1"]) else {
            panic!("not an update command");
        };
        assert!(args.variables().is_err());
    }

    #[test]
    fn get_has_an_interaction_count() {
        let command = customer_command(&["get", "c1"]);
        assert!(matches!(
            command,
            CustomerCommand::Get {
                interactions: 10,
                ..
            }
        ));
    }
}
