"""Fault matrix row S3 (docs/reliability.md §c), the refusing half: the deprecated OPC UA
policies Basic128Rsa15 and Basic256 (SHA-1) cannot be configured at all, so the agent never
offers or accepts them; the allowed policy × mode pairs connect in
tests/connectors/test_opcua_security.py::test_S3_every_secure_policy_and_mode_connects."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import ConfigError, load_config

YAML = """\
schema: tieragent/config/v1
factory: {{enterprise_id: E1, factory_id: f-1, industry_code: C3484, time_zone: Asia/Shanghai}}
connections:
  plc:
    protocol: opcua
    endpoint: opc.tcp://127.0.0.1:4840/
    security:
      policy: {policy}
      mode: SignAndEncrypt
      certificate: client.der
      private_key: client.pem
devices:
- id: M1
  line: L1
  process_step: mill
  kind: cnc
  digital: true
  key_process: true
  connection: plc
  signals:
  - id: state
    role: state
    state_map: plain
    opcua: {{node: "ns=2;s=M1/State"}}
"""


@pytest.mark.parametrize("policy", ["Basic128Rsa15", "Basic256"])
def test_S3_deprecated_policies_are_refused_at_load_naming_the_allowed_ones(
        tmp_path: Path, policy: str) -> None:
    """If a configuration asks for a deprecated security policy, then loading it fails with
    one message naming the file, the key and the policies that are allowed."""
    path = tmp_path / "agent.yaml"
    path.write_text(YAML.format(policy=policy))
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert str(path) in message and "connections.plc" in message and "policy" in message
    assert "Basic256Sha256" in message and "Aes256_Sha256_RsaPss" in message
