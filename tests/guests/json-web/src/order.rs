//! The work `json-web` does per request, in a file of its own so the
//! benchmarks compile the very same code natively (`benches/src/native.rs`
//! includes it): parse an order, check it, total it, answer in JSON.

use serde::{Deserialize, Serialize};

/// An order as clients post it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Order {
    /// The order's id.
    pub id: String,
    /// Who placed it.
    pub customer: Customer,
    /// What was ordered.
    pub lines: Vec<Line>,
    /// A discount code, if any.
    #[serde(default)]
    pub coupon: Option<String>,
}

/// The customer of an order.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Customer {
    /// Their name.
    pub name: String,
    /// Their email address.
    pub email: String,
    /// ISO country code, for the tax rate.
    pub country: String,
}

/// One line of an order.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Line {
    /// The article.
    pub sku: String,
    /// How many.
    pub quantity: u32,
    /// Price of one, in cents.
    pub unit_cents: u64,
}

/// What the service answers.
#[derive(Debug, Serialize)]
pub struct Summary<'a> {
    /// The order's id.
    pub id: &'a str,
    /// Lines in the order.
    pub lines: usize,
    /// Items over all lines.
    pub items: u64,
    /// Sum before tax, in cents.
    pub subtotal_cents: u64,
    /// Tax, in cents.
    pub tax_cents: u64,
    /// What the customer pays, in cents.
    pub total_cents: u64,
}

/// Parses `body` as an [`Order`] and answers its [`Summary`] as JSON, or a
/// one-line reason the order is refused.
pub fn summarize(body: &[u8]) -> Result<Vec<u8>, String> {
    let order: Order = serde_json::from_slice(body).map_err(|e| format!("bad order: {e}"))?;
    if order.lines.is_empty() {
        return Err("an order needs at least one line".into());
    }
    if order.customer.name.trim().is_empty() || !order.customer.email.contains('@') {
        return Err("the customer needs a name and an email address".into());
    }
    let mut items: u64 = 0;
    let mut subtotal: u64 = 0;
    for line in &order.lines {
        if line.sku.is_empty() || line.quantity == 0 {
            return Err(format!(
                "line {:?}: needs an article and a quantity",
                line.sku
            ));
        }
        items = items.saturating_add(u64::from(line.quantity));
        subtotal =
            subtotal.saturating_add(line.unit_cents.saturating_mul(u64::from(line.quantity)));
    }
    let discount_percent = match order.coupon.as_deref() {
        Some("TENOFF") => 10,
        _ => 0,
    };
    subtotal -= subtotal * discount_percent / 100;
    let tax_percent = match order.customer.country.as_str() {
        "DE" => 19,
        "FR" => 20,
        "GB" => 20,
        _ => 0,
    };
    let tax = subtotal * tax_percent / 100;
    let summary = Summary {
        id: &order.id,
        lines: order.lines.len(),
        items,
        subtotal_cents: subtotal,
        tax_cents: tax,
        total_cents: subtotal + tax,
    };
    serde_json::to_vec(&summary).map_err(|e| format!("cannot answer: {e}"))
}

/// A sample order of `lines` lines (about 60 bytes each), as the benchmark
/// posts it.
#[allow(dead_code, reason = "the benchmark's native copy of this file uses it")]
pub fn sample(lines: usize) -> String {
    let lines: Vec<String> = (0..lines)
        .map(|i| {
            format!(
                r#"{{"sku":"SKU-{i:05}-BLUE-M","quantity":{},"unit_cents":{}}}"#,
                i % 7 + 1,
                499 + i * 13
            )
        })
        .collect();
    format!(
        r#"{{"id":"order-20250101-000042","customer":{{"name":"Ada Lovelace","email":"ada@example.com","country":"DE"}},"lines":[{}],"coupon":"TENOFF"}}"#,
        lines.join(",")
    )
}
