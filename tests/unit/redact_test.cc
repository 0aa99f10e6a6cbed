#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "pg/db.h"
#include "common/errors.h"
#include "common/redact.h"

namespace outbox::relay {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

TEST(Redact, HidesKeyValuePasswords) {
  EXPECT_EQ(RedactConninfo("host=db user=app password=s3cret dbname=x"),
            "host=db user=app password=*** dbname=x");
  EXPECT_EQ(RedactConninfo("password = 'a b\\' c' host=db"), "password = *** host=db");
  // The client key's passphrase is a secret too (issue 13).
  EXPECT_EQ(RedactConninfo("host=db sslpassword=k3y sslmode=verify-full"), "host=db sslpassword=*** sslmode=verify-full");
  EXPECT_EQ(RedactConninfo("postgres://db/x?sslpassword=k3y&sslmode=require"),
            "postgres://db/x?sslpassword=***&sslmode=require");
}

TEST(Redact, HidesUriPasswords) {
  EXPECT_EQ(RedactConninfo("postgresql://app:s3cret@db:5432/x"), "postgresql://app:***@db:5432/x");
  EXPECT_EQ(RedactConninfo("postgres://db/x?user=a&password=s3cret&sslmode=require"),
            "postgres://db/x?user=a&password=***&sslmode=require");
}

TEST(Redact, ConninfoParseErrorsDoNotEchoFragments) {
  try {
    CheckConninfo("host=db hunter2 user=x");
    FAIL() << "expected ConfigError";
  } catch (const ConfigError& e) {
    EXPECT_THAT(e.what(), Not(HasSubstr("hunter2")));
    EXPECT_THAT(e.what(), HasSubstr("invalid PostgreSQL conninfo"));
  }
}

TEST(Redact, DbErrorsLoseThePassword) {
  EXPECT_EQ(SafeDbError("auth failed for s3cret\n", "host=x password=s3cret"), "auth failed for ***");
}

}  // namespace
}  // namespace outbox::relay
