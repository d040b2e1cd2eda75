"""Generated KServe v2 (package `inference`) modules, built from proto/stedq/kserve by setup.py.

Importing these registers `inference.*` in the protobuf descriptor pool: do not import them in the same
process as tritonclient.grpc or mlserver.grpc (duplicate symbol errors).
"""
