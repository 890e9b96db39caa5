"""CrossGuard policy pack: `pulumi preview --policy-pack policy` (every policy mandatory)."""

import os
import sys

# The engine runs this file from policy/; make its sibling modules importable either way.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from pack import ENFORCEMENT_LEVEL, PACK_NAME, POLICIES
from pulumi_policy import PolicyPack

PolicyPack(name=PACK_NAME, enforcement_level=ENFORCEMENT_LEVEL, policies=POLICIES)
