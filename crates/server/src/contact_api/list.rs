//! `GET /api/v1/Contact`: SuperOffice's OData-style list of contacts (the "SimpleContact"
//! archive), in its slim JSON shape:
//!
//! ```json
//! {"odata.metadata": "http://host/api/v1/archive$metadata",
//!  "odata.nextLink": "http://host/api/v1/Contact?$top=50&$skip=50",
//!  "value": [{"PrimaryKey": 3, "EntityName": "contact", "contactId": 3, "name": "Amadeus AS", …}]}
//! ```
//!
//! Rows are keyed by the archive's column names ([`COLUMNS`]; `$select` picks and orders
//! them, ContactEntity property names such as `OrgNr` or `UpdatedDate` are taken too).
//! `odata.nextLink` is there only when another page follows. `$top` is 50 by default and at most
//! 1000; `$skip` skips rows; `$orderBy` takes `contactId`, `name` and `updated`
//! (`updatedDate`), each `asc` or `desc`; `$filter` takes `name begins '…'`,
//! `updated afterTime '…'` and `contactId gt N`, joined by `and`. Soft-deleted contacts are not
//! listed. Anything else in these parameters is 400 naming it.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use crmhooks_store::contact::{CONTACT, CONTACT_COLUMNS};
use crmhooks_store::entity::column_index;
use crmhooks_store::{render_date, ColumnKind, Row, RowFilter, RowQuery, Ticks};
use serde_json::{Map, Value as Json};

use crate::auth::Auth;
use crate::body::ApiQuery;
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::AppState;

/// Rows a page holds when `$top` does not say.
pub const TOP_DEFAULT: i64 = 50;
/// Most rows a page may hold.
pub const TOP_MAX: i64 = 1000;

/// What a column holds, as the listing filters and renders it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Int,
    Text,
    Date,
}

/// A column of the listing: its archive name, other names it is asked for by (besides the
/// `ContactEntity` property the store's table gives it), and its position in a contact row.
struct Column {
    name: &'static str,
    aliases: &'static [&'static str],
    at: usize,
}

impl Column {
    /// The contact table's column.
    fn column(&self) -> &'static str {
        CONTACT_COLUMNS[self.at].name
    }

    /// What it holds, from the contact table.
    fn kind(&self) -> Kind {
        match CONTACT_COLUMNS[self.at].kind {
            ColumnKind::Text { .. } => Kind::Text,
            ColumnKind::Date => Kind::Date,
            ColumnKind::Key | ColumnKind::Int | ColumnKind::UShort | ColumnKind::Bool => Kind::Int,
        }
    }
}

/// The columns of a listed contact, in the order a listing without `$select` gives them.
const COLUMNS: [Column; 12] = [
    col("contactId", &[], "contact_id"),
    col("name", &[], "name"),
    col("department", &[], "department"),
    col("orgnr", &[], "orgNr"),
    col("number1", &[], "number1"),
    col("number2", &[], "number2"),
    col("associateId", &[], "associate_id"),
    col("business", &["businessId"], "business_idx"),
    col("category", &["categoryId"], "category_idx"),
    col("country", &["countryId"], "country_id"),
    col("registeredDate", &["registered"], "registered"),
    col("updatedDate", &["updated"], "updated"),
];

/// A listed column; evaluated while `COLUMNS` is built, so a column the contact table does not
/// have stops the build.
const fn col(name: &'static str, aliases: &'static [&'static str], column: &str) -> Column {
    Column {
        name,
        aliases,
        at: column_index(&CONTACT_COLUMNS, column),
    }
}

/// The column asked for as `asked`: any case, its archive name, an alias or the
/// `ContactEntity` property of its contact column (`OrgNr`, `Associate`, `CreatedDate`).
fn column(asked: &str) -> Option<&'static Column> {
    let named = |c: &&Column| {
        c.name.eq_ignore_ascii_case(asked)
            || c.aliases.iter().any(|a| a.eq_ignore_ascii_case(asked))
    };
    COLUMNS.iter().find(named).or_else(|| {
        let shown = CONTACT.by_property(asked)?;
        COLUMNS.iter().find(|c| c.column() == shown.name)
    })
}

fn bad(message: String) -> ApiError {
    ApiError::new(ErrorCode::InvalidQuery, message)
}

/// The parameters of a listing, read from the query string.
#[derive(Debug, PartialEq)]
pub struct Listing {
    select: Vec<&'static Column>,
    query: RowQuery,
}

impl std::fmt::Debug for Column {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

impl PartialEq for Column {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

/// Reads the listing's parameters; `$`-parameters it does not know are refused (`$format=json`
/// and `$mode=slim`, which change nothing here, and `$jsonSafe` are taken).
pub fn parse(params: &[(String, String)]) -> ApiResult<Listing> {
    let mut listing = Listing {
        select: COLUMNS.iter().collect(),
        query: RowQuery {
            filters: Vec::new(),
            order: Vec::new(),
            skip: 0,
            top: TOP_DEFAULT,
        },
    };
    for (key, value) in params {
        let k = key.to_ascii_lowercase();
        match k.as_str() {
            "$top" => listing.query.top = count("$top", value, TOP_MAX)?,
            "$skip" => listing.query.skip = count("$skip", value, i64::from(i32::MAX))?,
            "$select" => listing.select = select(value)?,
            "$orderby" => listing.query.order = order_by(value)?,
            "$filter" => listing.query.filters = filter(value)?,
            "$format" if value.eq_ignore_ascii_case("json") => {}
            "$mode" if value.eq_ignore_ascii_case("slim") => {}
            "$jsonsafe" => {}
            "$format" | "$mode" => {
                return Err(bad(format!(
                    "{key}={value:?} is not supported (JSON, slim mode only)"
                )))
            }
            _ if k.starts_with('$') => {
                return Err(bad(format!(
                    "{key} is not supported; use $top, $skip, $select, $orderBy or $filter"
                )))
            }
            _ => {}
        }
    }
    Ok(listing)
}

fn count(name: &str, value: &str, max: i64) -> ApiResult<i64> {
    match value.trim().parse::<i64>() {
        Ok(n) if (0..=max).contains(&n) => Ok(n),
        _ => Err(bad(format!(
            "{name} {value:?} must be a whole number from 0 to {max}"
        ))),
    }
}

fn select(value: &str) -> ApiResult<Vec<&'static Column>> {
    let mut out: Vec<&'static Column> = Vec::new();
    for name in value.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let c = column(name).ok_or_else(|| {
            bad(format!(
                "$select: unknown column {name:?}; use {}",
                names(COLUMNS.iter())
            ))
        })?;
        if !out.contains(&c) {
            out.push(c);
        }
    }
    if out.is_empty() {
        return Err(bad("$select names no column".into()));
    }
    Ok(out)
}

fn names<'a>(cols: impl Iterator<Item = &'a Column>) -> String {
    cols.map(|c| c.name).collect::<Vec<_>>().join(", ")
}

/// The columns a listing sorts and filters by (the others are shown only).
const SORTABLE: [&str; 3] = ["contactId", "name", "updatedDate"];

fn order_by(value: &str) -> ApiResult<Vec<(&'static str, bool)>> {
    let mut out = Vec::new();
    for item in value.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let mut words = item.split_whitespace();
        let name = words.next().unwrap_or_default();
        let c = column(name)
            .filter(|c| SORTABLE.contains(&c.name))
            .ok_or_else(|| {
                bad(format!(
                    "$orderBy: cannot sort by {name:?}; use contactId, name or updated"
                ))
            })?;
        let desc = match words.next().map(str::to_ascii_lowercase).as_deref() {
            None | Some("asc") => false,
            Some("desc") => true,
            Some(_) => {
                return Err(bad(format!(
                    "$orderBy: {item:?}: the direction must be asc or desc"
                )))
            }
        };
        if let Some(extra) = words.next() {
            return Err(bad(format!("$orderBy: {item:?}: unexpected {extra:?}")));
        }
        out.push((c.column(), desc));
    }
    Ok(out)
}

/// Splits a `$filter` into words: bare words, and `'…'` strings (`''` is a quote inside).
fn words(value: &str) -> ApiResult<Vec<(String, bool)>> {
    let mut out = Vec::new();
    let mut chars = value.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if c == '\'' {
            chars.next();
            let mut s = String::new();
            loop {
                match chars.next() {
                    None => return Err(bad("$filter: a string is not closed with '".into())),
                    Some('\'') if chars.peek() == Some(&'\'') => {
                        chars.next();
                        s.push('\'');
                    }
                    Some('\'') => break,
                    Some(ch) => s.push(ch),
                }
            }
            out.push((s, true));
        } else {
            let mut s = String::new();
            while let Some(&ch) = chars.peek() {
                if ch.is_whitespace() || ch == '\'' {
                    break;
                }
                s.push(ch);
                chars.next();
            }
            out.push((s, false));
        }
    }
    Ok(out)
}

fn filter(value: &str) -> ApiResult<Vec<RowFilter>> {
    let words = words(value)?;
    let mut out = Vec::new();
    let mut rest = words.as_slice();
    loop {
        let [(field, false), (op, false), (operand, quoted), tail @ ..] = rest else {
            return Err(bad(format!(
                "$filter {value:?}: expected `field operator value`, joined by `and`"
            )));
        };
        out.push(condition(field, op, operand, *quoted)?);
        match tail {
            [] => return Ok(out),
            [(and, false), more @ ..] if and.eq_ignore_ascii_case("and") => rest = more,
            [(other, _), ..] => {
                return Err(bad(format!(
                    "$filter: {other:?} is not supported; conditions are joined by `and`"
                )))
            }
        }
    }
}

fn condition(field: &str, op: &str, operand: &str, quoted: bool) -> ApiResult<RowFilter> {
    let c = column(field)
        .filter(|c| SORTABLE.contains(&c.name))
        .ok_or_else(|| {
            bad(format!(
                "$filter: unknown field {field:?}; use name, updated or contactId"
            ))
        })?;
    let unsupported = |want: &str| {
        bad(format!(
            "$filter: operator {op:?} is not supported for {}; use {want}",
            c.name
        ))
    };
    match c.kind() {
        Kind::Text if op.eq_ignore_ascii_case("begins") => {
            if !quoted {
                return Err(bad(format!("$filter: {op} takes a quoted string")));
            }
            Ok(RowFilter::Begins {
                column: c.column(),
                prefix: operand.to_owned(),
            })
        }
        Kind::Text => Err(unsupported("begins")),
        Kind::Date if op.eq_ignore_ascii_case("afterTime") => Ok(RowFilter::After {
            column: c.column(),
            at: instant(operand)?,
        }),
        Kind::Date => Err(unsupported("afterTime")),
        Kind::Int if op.eq_ignore_ascii_case("gt") => Ok(RowFilter::Greater {
            column: c.column(),
            than: operand
                .trim()
                .parse()
                .map_err(|_| bad(format!("$filter: {} gt needs a whole number", c.name)))?,
        }),
        Kind::Int => Err(unsupported("gt")),
    }
}

/// An instant of `afterTime`: a .NET date-time, with or without an offset (without one it is
/// UTC, the zone SuperOffice keeps `updated` in), or a date (its midnight, UTC).
fn instant(text: &str) -> ApiResult<Ticks> {
    let t = text.trim();
    let parsed = crmhooks_payload::NetDateTime::parse(t)
        .ok()
        .and_then(|d| d.to_offset_date_time())
        .or_else(|| {
            let fmt = time::macros::format_description!("[year]-[month]-[day]");
            time::Date::parse(t, &fmt)
                .ok()
                .map(|d| d.midnight().assume_utc())
        })
        .ok_or_else(|| {
            bad(format!(
                "$filter: {text:?} is not a date-time such as 2025-05-28T15:00:00"
            ))
        })?;
    Ok((parsed.unix_timestamp_nanos() / 100) as i64)
}

/// One listed contact: `PrimaryKey`, `EntityName`, then the selected columns.
fn row_json(row: &Row, select: &[&'static Column], state: &AppState) -> Json {
    let mut m = Map::new();
    let id = row
        .at(const { column_index(&CONTACT_COLUMNS, "contact_id") })
        .as_i64();
    m.insert("PrimaryKey".into(), Json::from(id));
    m.insert("EntityName".into(), Json::from("contact"));
    for c in select {
        let v = row.at(c.at);
        let json = match c.kind() {
            Kind::Int => Json::from(v.as_i64()),
            Kind::Text => Json::from(v.as_str().unwrap_or_default()),
            Kind::Date => Json::from(render_date(v.as_ticks(), Some(&state.zone))),
        };
        m.insert(c.name.to_owned(), json);
    }
    Json::Object(m)
}

/// Percent-encodes a query-string component.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'$') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The next page's URL: the same parameters, `$skip` moved on by `$top`.
fn next_link(state: &AppState, params: &[(String, String)], query: &RowQuery) -> String {
    let mut parts: Vec<String> = params
        .iter()
        .filter(|(k, _)| !k.eq_ignore_ascii_case("$top") && !k.eq_ignore_ascii_case("$skip"))
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect();
    parts.push(format!("$top={}", query.top));
    parts.push(format!("$skip={}", query.skip.saturating_add(query.top)));
    format!("{}/api/v1/Contact?{}", state.base_url, parts.join("&"))
}

/// `GET /api/v1/Contact`.
#[utoipa::path(get, path = "/Contact", tag = "Contact", operation_id = "ListContacts",
    summary = "List contacts",
    params(
        ("$select" = Option<String>, Query, description = "Columns to answer, in order (archive names such as `contactId`, `name`, `orgNr`, or ContactEntity names)."),
        ("$filter" = Option<String>, Query, description = "`name begins 'A'`, `updated afterTime '2024-01-01'`, `contactId gt 10`, joined by `and`."),
        ("$orderBy" = Option<String>, Query, description = "`contactId`, `name` or `updated`, each `asc` or `desc`."),
        ("$top" = Option<i64>, Query, description = "Rows per page: 50 by default, at most 1000."),
        ("$skip" = Option<i64>, Query, description = "Rows to skip."),
    ),
    responses((status = 200, description = "A page of live contacts; `odata.nextLink` when another follows.", body = crate::openapi::schemas::ContactListDoc)))]
pub(super) async fn list(
    State(state): State<AppState>,
    auth: Auth,
    ApiQuery(params): ApiQuery<Vec<(String, String)>>,
) -> ApiResult<Response> {
    let Listing { select, query } = parse(&params)?;
    // One row more than the page tells whether another page follows.
    let ask = RowQuery {
        top: query.top.saturating_add(1),
        ..query.clone()
    };
    let mut rows = state
        .store
        .list_rows(auth.actor.tenant_id, &CONTACT, &ask)
        .await?;
    let more = i64::try_from(rows.len()).unwrap_or(i64::MAX) > query.top;
    rows.truncate(usize::try_from(query.top).unwrap_or(0));
    let mut out = Map::new();
    out.insert(
        "odata.metadata".into(),
        Json::from(format!("{}/api/v1/archive$metadata", state.base_url)),
    );
    if more {
        out.insert(
            "odata.nextLink".into(),
            Json::from(next_link(&state, &params, &query)),
        );
    }
    out.insert(
        "value".into(),
        Json::Array(rows.iter().map(|r| row_json(r, &select, &state)).collect()),
    );
    Ok(axum::Json(Json::Object(out)).into_response())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn p(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn err(pairs: &[(&str, &str)]) -> String {
        parse(&p(pairs)).unwrap_err().message
    }

    #[test]
    fn the_documented_parameters_are_read() {
        let l = parse(&p(&[
            ("$top", "10"),
            ("$skip", "20"),
            ("$select", "name, OrgNr,updated"),
            ("$orderby", "name desc,contactId"),
            (
                "$filter",
                "name begins 'O''Br' and updated afterTime '2025-05-28T15:00:00' and contactId gt 5",
            ),
        ]))
        .unwrap();
        assert_eq!(
            l.select.iter().map(|c| c.name).collect::<Vec<_>>(),
            ["name", "orgnr", "updatedDate"]
        );
        assert_eq!(l.query.order, [("name", true), ("contact_id", false)]);
        assert_eq!((l.query.top, l.query.skip), (10, 20));
        assert_eq!(
            l.query.filters[0],
            RowFilter::Begins {
                column: "name",
                prefix: "O'Br".into()
            }
        );
        assert_eq!(
            l.query.filters[2],
            RowFilter::Greater {
                column: "contact_id",
                than: 5
            }
        );
        let defaults = parse(&[]).unwrap();
        assert_eq!(defaults.query.top, TOP_DEFAULT);
        assert_eq!(defaults.select.len(), COLUMNS.len());
    }

    #[test]
    fn unknown_names_and_operators_are_named() {
        for (pairs, named) in [
            (&[("$filter", "city begins 'x'")][..], "\"city\""),
            (&[("$filter", "name contains 'x'")], "\"contains\""),
            (&[("$filter", "contactId eq 5")], "\"eq\""),
            (
                &[("$filter", "name begins 'x' or contactId gt 1")],
                "\"or\"",
            ),
            (&[("$filter", "name begins 'x")], "not closed"),
            (&[("$filter", "updated afterTime 'yesterday'")], "yesterday"),
            (&[("$orderBy", "department")], "\"department\""),
            (&[("$orderBy", "name up")], "asc or desc"),
            (&[("$select", "name,fax")], "\"fax\""),
            (&[("$top", "1001")], "$top"),
            (&[("$skip", "-1")], "$skip"),
            (&[("$entities", "person")], "$entities"),
        ] {
            let e = err(pairs);
            assert!(e.contains(named), "{pairs:?}: {e}");
        }
    }
}
