import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class StateVersion(_message.Message):
    __slots__ = ("agent_id", "version", "document_json", "schema_version", "size_bytes", "create_time", "event_sequence")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    DOCUMENT_JSON_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_VERSION_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    EVENT_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    version: int
    document_json: bytes
    schema_version: int
    size_bytes: int
    create_time: _timestamp_pb2.Timestamp
    event_sequence: int
    def __init__(self, agent_id: _Optional[str] = ..., version: _Optional[int] = ..., document_json: _Optional[bytes] = ..., schema_version: _Optional[int] = ..., size_bytes: _Optional[int] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., event_sequence: _Optional[int] = ...) -> None: ...

class SaveStateRequest(_message.Message):
    __slots__ = ("agent_id", "document_json", "expected_version", "schema_version", "request_id")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    DOCUMENT_JSON_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_VERSION_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_VERSION_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    document_json: bytes
    expected_version: int
    schema_version: int
    request_id: str
    def __init__(self, agent_id: _Optional[str] = ..., document_json: _Optional[bytes] = ..., expected_version: _Optional[int] = ..., schema_version: _Optional[int] = ..., request_id: _Optional[str] = ...) -> None: ...

class SaveStateResponse(_message.Message):
    __slots__ = ("state",)
    STATE_FIELD_NUMBER: _ClassVar[int]
    state: StateVersion
    def __init__(self, state: _Optional[_Union[StateVersion, _Mapping]] = ...) -> None: ...

class PatchStateRequest(_message.Message):
    __slots__ = ("agent_id", "patch_json", "expected_version", "request_id")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    PATCH_JSON_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_VERSION_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    patch_json: bytes
    expected_version: int
    request_id: str
    def __init__(self, agent_id: _Optional[str] = ..., patch_json: _Optional[bytes] = ..., expected_version: _Optional[int] = ..., request_id: _Optional[str] = ...) -> None: ...

class PatchStateResponse(_message.Message):
    __slots__ = ("state",)
    STATE_FIELD_NUMBER: _ClassVar[int]
    state: StateVersion
    def __init__(self, state: _Optional[_Union[StateVersion, _Mapping]] = ...) -> None: ...

class GetStateRequest(_message.Message):
    __slots__ = ("agent_id", "version", "as_of")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    AS_OF_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    version: int
    as_of: _timestamp_pb2.Timestamp
    def __init__(self, agent_id: _Optional[str] = ..., version: _Optional[int] = ..., as_of: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class GetStateResponse(_message.Message):
    __slots__ = ("state",)
    STATE_FIELD_NUMBER: _ClassVar[int]
    state: StateVersion
    def __init__(self, state: _Optional[_Union[StateVersion, _Mapping]] = ...) -> None: ...

class ListStateVersionsRequest(_message.Message):
    __slots__ = ("agent_id", "include_documents", "page_size", "page_token")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    include_documents: bool
    page_size: int
    page_token: str
    def __init__(self, agent_id: _Optional[str] = ..., include_documents: _Optional[bool] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListStateVersionsResponse(_message.Message):
    __slots__ = ("versions", "next_page_token")
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    versions: _containers.RepeatedCompositeFieldContainer[StateVersion]
    next_page_token: str
    def __init__(self, versions: _Optional[_Iterable[_Union[StateVersion, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class ClearStateRequest(_message.Message):
    __slots__ = ("agent_id", "request_id")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    request_id: str
    def __init__(self, agent_id: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class ClearStateResponse(_message.Message):
    __slots__ = ("deleted_versions",)
    DELETED_VERSIONS_FIELD_NUMBER: _ClassVar[int]
    deleted_versions: int
    def __init__(self, deleted_versions: _Optional[int] = ...) -> None: ...

class BatchGetStatesRequest(_message.Message):
    __slots__ = ("agent_ids",)
    AGENT_IDS_FIELD_NUMBER: _ClassVar[int]
    agent_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, agent_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class BatchGetStatesResponse(_message.Message):
    __slots__ = ("states", "missing_agent_ids")
    STATES_FIELD_NUMBER: _ClassVar[int]
    MISSING_AGENT_IDS_FIELD_NUMBER: _ClassVar[int]
    states: _containers.RepeatedCompositeFieldContainer[StateVersion]
    missing_agent_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, states: _Optional[_Iterable[_Union[StateVersion, _Mapping]]] = ..., missing_agent_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class MigrateStatesRequest(_message.Message):
    __slots__ = ("agent_type", "page_size", "page_token", "dry_run")
    AGENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    agent_type: str
    page_size: int
    page_token: str
    dry_run: bool
    def __init__(self, agent_type: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., dry_run: _Optional[bool] = ...) -> None: ...

class MigrateStatesResponse(_message.Message):
    __slots__ = ("migrated", "up_to_date", "remaining", "target_schema_version", "next_page_token", "failures")
    MIGRATED_FIELD_NUMBER: _ClassVar[int]
    UP_TO_DATE_FIELD_NUMBER: _ClassVar[int]
    REMAINING_FIELD_NUMBER: _ClassVar[int]
    TARGET_SCHEMA_VERSION_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    FAILURES_FIELD_NUMBER: _ClassVar[int]
    migrated: int
    up_to_date: int
    remaining: int
    target_schema_version: int
    next_page_token: str
    failures: _containers.RepeatedCompositeFieldContainer[MigrationFailure]
    def __init__(self, migrated: _Optional[int] = ..., up_to_date: _Optional[int] = ..., remaining: _Optional[int] = ..., target_schema_version: _Optional[int] = ..., next_page_token: _Optional[str] = ..., failures: _Optional[_Iterable[_Union[MigrationFailure, _Mapping]]] = ...) -> None: ...

class MigrationFailure(_message.Message):
    __slots__ = ("agent_id", "from_schema_version", "message")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    FROM_SCHEMA_VERSION_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    from_schema_version: int
    message: str
    def __init__(self, agent_id: _Optional[str] = ..., from_schema_version: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...
