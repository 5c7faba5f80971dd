"""Would real st2 accept and store this trigger payload? Asked of st2's own code, for tests.

`st2_refuses(payload)` runs the schema validation of
`st2common.validators.api.reactor.validate_trigger_payload` (st2common.util.schema.validate
with the trigger's payload_schema, as that function calls it) and builds the whole
TriggerInstanceDB document as st2 saves it (`to_mongo`, then BSON under MongoDB's 16 MB).
It returns the exception st2 raises, or None. Independent of the pack's own check
(healing.trigger_payload), which tests compare against it.
"""

import datetime
import os

import yaml

from synthralos_tests import PACK_ROOT

BSON_LIMIT = 16 * 1024 * 1024


def payload_schema(trigger="agent_failure"):
    with open(os.path.join(PACK_ROOT, "triggers", trigger + ".yaml")) as handle:
        return yaml.safe_load(handle)["payload_schema"]


def st2_refuses(payload, trigger="agent_failure"):
    import bson
    from st2common.models.db.trigger import TriggerInstanceDB
    from st2common.util import schema as util_schema

    try:
        util_schema.validate(instance=payload, schema=payload_schema(trigger), cls=util_schema.CustomValidator,
                             use_default=True, allow_default_none=True)
        document = TriggerInstanceDB(trigger="synthralos.%s" % trigger, payload=payload,
                                     occurrence_time=datetime.datetime.utcnow(), status="pending").to_mongo()
        size = len(bson.BSON.encode(document))
    except BaseException as exc:  # RecursionError included: st2 would drop the instance
        return exc
    if size > BSON_LIMIT:
        return ValueError("document of %d bytes" % size)
    return None
