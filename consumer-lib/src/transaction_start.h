#pragma once

#include <pqxx/pqxx>

namespace outbox::internal {

// Call first in every library function that runs statements in a caller's
// pqxx::transaction_base. libpqxx 6 opens a pqxx::subtransaction's SAVEPOINT only at
// its first exec(), and exec_params() skips that step (libpqxx issue #512, fixed in 7):
// statements of a fresh subtransaction would run outside its savepoint and survive its
// abort. One exec() opens it (a round trip, for subtransactions only); every other
// transaction type began in its constructor, so this does nothing for them.
inline void StartTransaction(pqxx::transaction_base& tx) {
  if (dynamic_cast<pqxx::subtransaction*>(&tx) != nullptr) tx.exec("SELECT 1");
}

}  // namespace outbox::internal
