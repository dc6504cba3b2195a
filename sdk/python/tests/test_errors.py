"""Mapping the bindings' `Err` values to the SDK's exceptions."""

from __future__ import annotations

import unittest

import weft
from weft import errors

from . import fakes

T = fakes.vmbus_types
KV = fakes.kv_store
CFG = fakes.config_store


class ErrorMapping(unittest.TestCase):
    def test_every_vmbus_variant_has_its_exception(self) -> None:
        cases = [
            (T.Error_RateLimited(), weft.RateLimited, "", "rate limited; retry later"),
            (T.Error_TooLarge("body"), weft.TooLarge, "body", "too large: body"),
            (T.Error_Denied("queue `x`"), weft.Denied, "queue `x`", "denied: queue `x`"),
            (T.Error_NotFound("receipt"), weft.NotFound, "receipt", "not found: receipt"),
            (T.Error_Unavailable("busy"), weft.Unavailable, "busy", "unavailable: busy"),
            (T.Error_Invalid("zero"), weft.Invalid, "zero", "invalid: zero"),
        ]
        for value, cls, reason, text in cases:
            error = errors.from_err(fakes.Err(value))
            self.assertIs(type(error), cls)
            self.assertIsInstance(error, weft.WeftError)
            self.assertEqual((error.reason, str(error)), (reason, text))

    def test_only_rate_limits_and_outages_are_transient(self) -> None:
        self.assertTrue(weft.RateLimited().transient)
        self.assertTrue(weft.Unavailable("x").transient)
        for cls in [weft.TooLarge, weft.Denied, weft.NotFound, weft.Invalid,
                    weft.KeyValueError, weft.BucketFull, weft.NoSuchBucket,
                    weft.AccessDenied, weft.ConfigError]:
            self.assertFalse(cls("x").transient, cls.__name__)

    def test_key_value_errors(self) -> None:
        self.assertIs(type(errors.from_err(fakes.Err(KV.Error_NoSuchStore()))), weft.NoSuchBucket)
        self.assertIs(type(errors.from_err(fakes.Err(KV.Error_AccessDenied()))), weft.AccessDenied)
        why = "bucket-full: the bucket holds 67108000 bytes; the limit is 67108864"
        full = errors.from_err(fakes.Err(KV.Error_Other(why)))
        self.assertIs(type(full), weft.BucketFull)
        self.assertEqual(full.reason, "the bucket holds 67108000 bytes; the limit is 67108864")
        self.assertEqual(errors.from_err(KV.Error_Other("bucket-full")).reason, "")
        for other in ["unavailable: down", "rate-limited; retry later", "not bucket-full"]:
            error = errors.from_err(fakes.Err(KV.Error_Other(other)))
            self.assertIs(type(error), weft.KeyValueError)
            self.assertEqual(str(error), f"key-value error: {other}")

    def test_config_errors(self) -> None:
        error = errors.from_err(fakes.Err(CFG.Error_Upstream("vault")))
        self.assertIs(type(error), weft.ConfigError)
        self.assertEqual(error.reason, "vault")
        self.assertIs(type(errors.from_err(fakes.Err(CFG.Error_Io("eof")))), weft.ConfigError)

    def test_an_unknown_error_is_still_a_weft_error(self) -> None:
        error = errors.from_err(fakes.Err(42))
        self.assertIs(type(error), weft.WeftError)
        self.assertEqual(error.reason, "42")


if __name__ == "__main__":
    unittest.main()
