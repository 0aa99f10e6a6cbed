#pragma once
// libpq helpers shared by the benchmark programs that talk to PostgreSQL directly.

#include <libpq-fe.h>

#include <memory>

#include "bench_common.h"

namespace outbox::bench {

struct PgFinish {
  void operator()(PGconn* c) const { PQfinish(c); }
};
struct PgClear {
  void operator()(PGresult* r) const { PQclear(r); }
};
using PgResultPtr = std::unique_ptr<PGresult, PgClear>;

// Owns r; exits on a failed statement.
inline PgResultPtr Must(PGconn* c, PGresult* raw) {
  PgResultPtr r{raw};
  auto s = PQresultStatus(r.get());
  if (s != PGRES_COMMAND_OK && s != PGRES_TUPLES_OK) Die(PQerrorMessage(c));
  return r;
}

}  // namespace outbox::bench
