"""Unit tests of the Kamailio adapter's pure helpers (deploy/kamailio/holdless_router.py),
without Kamailio: KSR is stubbed. Run by tests/sip/e2e.sh; also `python3 -m unittest`."""

import os
import sys
import types
import unittest

sys.modules.setdefault("KSR", types.ModuleType("KSR"))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../deploy/kamailio"))
import holdless_router as r  # noqa: E402


class Numbers(unittest.TestCase):
    def test_uri_user(self):
        self.assertEqual(r.uri_user("sip:+442079460958@carrier.example.com;user=phone"), "+442079460958")
        self.assertEqual(r.uri_user("<sips:alice@example.com>"), "alice")
        self.assertEqual(r.uri_user("tel:+1-212-555-0100;phone-context=x"), "+1-212-555-0100")
        self.assertEqual(r.uri_user("sip:%2B13125550100@h"), "+13125550100")
        self.assertEqual(r.uri_user("sip:example.com"), "")
        self.assertEqual(r.uri_user("mailto:a@b"), "")
        self.assertEqual(r.uri_user(""), "")

    def test_to_e164(self):
        self.assertEqual(r.to_e164("+442079460958", True), "+442079460958")
        self.assertEqual(r.to_e164("00442079460958", True), "+442079460958")
        self.assertEqual(r.to_e164("+1-212-555-0100", True), "+12125550100")
        self.assertEqual(r.to_e164("442079460958", True), "+442079460958")
        self.assertEqual(r.to_e164("442079460958", False), "")
        self.assertEqual(r.to_e164("02079460958", True), "", "national format is not E.164")
        self.assertEqual(r.to_e164("anonymous", True), "")
        self.assertEqual(r.to_e164("1234", True), "")
        self.assertEqual(r.to_e164("+1234567890123456", True), "", "more than 15 digits")
        self.assertEqual(r.to_e164("", True), "")


class Ids(unittest.TestCase):
    def test_call_id(self):
        self.assertEqual(r.holdless_call_id("1-3029@127.0.0.1"), "1-3029@127.0.0.1")
        odd = r.holdless_call_id("a/b+c{d}")
        self.assertRegex(odd, r"^sip-[0-9a-f]{32}$")
        self.assertEqual(odd, r.holdless_call_id("a/b+c{d}"), "stable")
        self.assertRegex(r.holdless_call_id("x" * 129), r"^sip-[0-9a-f]{32}$")

    def test_label_and_header_values(self):
        self.assertEqual(r.label(" WINTER26 "), "WINTER26")
        self.assertEqual(r.label("x" * 65), "")
        self.assertEqual(r.label("a\x01b"), "")
        self.assertEqual(r.header_value("a\r\nInjected: yes"), "aInjected: yes")
        self.assertEqual(r.uri_header_param("queue=a;reason=rule"), "queue%3Da%3Breason%3Drule")


if __name__ == "__main__":
    unittest.main()
