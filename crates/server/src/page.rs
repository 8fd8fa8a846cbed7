//! Pagination of the list routes (`/api/v1/usage`, `/api/v1/hosts`, `/api/v1/alarms`).
//!
//! Every list answer carries `next`: `null` on the last page, else an opaque cursor; pass it
//! back as `cursor=` with the same other parameters to get the next page. `limit` is the page
//! size, at most [`MAX_PAGE`] (a larger `limit` is clamped; no `limit` means the route's
//! default page). Cursors hold an offset into the route's order, and for `usage` also the
//! resolved time range of the first page, so the pages of one listing cover the same window
//! even as `now` moves. A cursor that does not parse, or an offset past [`MAX_OFFSET`], is a
//! 400.

use crate::error::ApiError;

/// Rows (hosts, alarm events) one page holds at most.
pub const MAX_PAGE: usize = 50_000;

/// The furthest offset a cursor may name (deeper listings need a narrower query).
pub const MAX_OFFSET: usize = 10_000_000;

/// A decoded cursor: the offset, and the pinned time range (usage).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    /// How many items of the listing come before this page.
    pub offset: usize,
    /// The `[from, to)` range (Unix ms) the first page resolved, so every page reads the same
    /// window; `None` for listings without one.
    pub range: Option<(i64, i64)>,
}

impl Cursor {
    /// `o<offset>` or `o<offset>r<from>_<to>`.
    pub fn encode(&self) -> String {
        match self.range {
            Some((f, t)) => format!("o{}r{f}_{t}", self.offset),
            None => format!("o{}", self.offset),
        }
    }

    /// Parses a cursor made by [`Cursor::encode`]; a 400 naming `cursor` when it is not one
    /// (longer than 64 bytes, malformed, or an offset past [`MAX_OFFSET`]).
    pub fn decode(s: &str) -> Result<Cursor, ApiError> {
        let bad = || {
            ApiError::bad_param("cursor", "not a cursor of this server: pass `next` back unchanged")
        };
        if s.len() > 64 {
            return Err(bad());
        }
        let rest = s.strip_prefix('o').ok_or_else(bad)?;
        let (off, range) = match rest.split_once('r') {
            Some((o, r)) => {
                let (f, t) = r.split_once('_').ok_or_else(bad)?;
                let f: i64 = f.parse().map_err(|_| bad())?;
                let t: i64 = t.parse().map_err(|_| bad())?;
                if f > t {
                    return Err(bad());
                }
                (o, Some((f, t)))
            }
            None => (rest, None),
        };
        let offset: usize = off.parse().map_err(|_| bad())?;
        if offset > MAX_OFFSET {
            return Err(ApiError::bad_param(
                "cursor",
                format!("offset past {MAX_OFFSET}: narrow the query instead"),
            ));
        }
        Ok(Cursor { offset, range })
    }
}

/// The page size: `limit` clamped to [`MAX_PAGE`], else `default`.
pub fn size(limit: Option<usize>, default: usize) -> usize {
    limit.unwrap_or(default).min(MAX_PAGE)
}

/// Takes the page at `offset` of `size` from `items`; returns it and the `next` cursor.
pub fn take<T>(
    items: Vec<T>,
    offset: usize,
    size: usize,
    range: Option<(i64, i64)>,
) -> (Vec<T>, Option<String>) {
    let total = items.len();
    take_of(items, total, offset, size, range)
}

/// [`take`] from the first `items.len()` of a listing of `total` items (the listing's tail
/// past this page's end need not be held).
pub fn take_of<T>(
    items: Vec<T>,
    total: usize,
    offset: usize,
    size: usize,
    range: Option<(i64, i64)>,
) -> (Vec<T>, Option<String>) {
    let page: Vec<T> = items.into_iter().skip(offset).take(size).collect();
    let end = offset.saturating_add(page.len());
    let next = (end < total && size > 0).then(|| Cursor { offset: end, range }.encode());
    (page, next)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_refuse_junk() {
        for c in [Cursor { offset: 5, range: None }, Cursor { offset: 0, range: Some((-3, 9)) }] {
            assert_eq!(Cursor::decode(&c.encode()).unwrap(), c);
        }
        for bad in ["", "x1", "o", "o-1", "o1r5_1", "o1r1", &"o1".repeat(40), "o99999999999"] {
            assert!(Cursor::decode(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn pages_cover_everything_once() {
        let items: Vec<u32> = (0..25).collect();
        let mut got = Vec::new();
        let mut offset = 0;
        loop {
            let (page, next) = take(items.clone(), offset, 10, None);
            got.extend(page);
            match next {
                Some(c) => offset = Cursor::decode(&c).unwrap().offset,
                None => break,
            }
        }
        assert_eq!(got, items);
        assert_eq!(size(Some(usize::MAX), 100), MAX_PAGE);
        assert_eq!(size(None, 100), 100);
    }
}
