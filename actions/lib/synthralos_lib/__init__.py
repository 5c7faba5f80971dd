"""synthralos pack library.

Everything that decides something (classify, plan, back off, route, batch)
lives here, in a module with a plain name; actions and sensors are thin
wrappers that parse parameters, call into this package and return JSON.
Actions find it on `actions/lib` (st2's python runner puts that directory on
sys.path); sensors add it themselves, since st2 only shares `lib/` between
actions and sensors when `[packs] enable_common_libs` is on.
"""
