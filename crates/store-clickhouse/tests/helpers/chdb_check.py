#!/usr/bin/env python3
"""Runs SQL statements on a current ClickHouse embedded in the `chdb` PyPI package.

Reads a JSON list of statements on stdin, runs them in order in one chdb session (so the
store's single-node DDL, inserts and query shapes meet a current release), and prints a JSON
list of their TSV outputs on stdout. Exit status 3 when chdb is not importable (the Rust test
reports that as SKIPPED), 1 with the failing statement on stderr when one fails.

Used by `crates/store-clickhouse/tests/chdb.rs`; by hand:
    echo '["SELECT version()"]' | python3 chdb_check.py
"""

import json
import sys


def main():
    try:
        from chdb import session
    except ImportError as e:  # pragma: no cover - depends on the machine
        print(f"chdb is not importable: {e} (pip install chdb)", file=sys.stderr)
        return 3
    statements = json.load(sys.stdin)
    sess = session.Session()
    out = []
    try:
        out.append(str(sess.query("SELECT version()", "TSV")).strip())
        for sql in statements:
            try:
                res = sess.query(sql, "TSV")
            except Exception as e:  # chdb raises on a server-side error
                print(f"statement failed on ClickHouse {out[0]}:\n{sql}\n{e}", file=sys.stderr)
                return 1
            out.append(str(res) if res is not None else "")
    finally:
        sess.close()
    json.dump(out, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
