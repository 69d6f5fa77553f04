"""Features stage: event log, feature definitions, offline / point-in-time builder, online store.

The engine-facing API::

    store = InProcessStore(ItemInfoCatalog.from_dataset(data))      # or RedisStore(url, catalog)
    ingestor = Ingestor(store, EventLog("var/events"))          # + ConsentRegistry
    ingestor.ingest([{"user_id": "u1", "item_id": "i9", "timestamp": 1.7e9}])  # -> IngestResult
    profile = store.get_profile("u1")                           # never raises; .degraded/.reason
    query = profile_to_query(profile, data.item_index, data.user_index, base_history=...)
"""

from recsys.features.definitions import (
    FEATURES,
    FeatureConfig,
    FeatureDef,
    ItemInfo,
    ItemInfoCatalog,
    UserState,
    age_band,
    derive_context,
    feature_names,
    fold_events,
    fold_user,
    item_features,
    merge_history,
    user_contexts,
    user_features,
)
from recsys.features.events import (
    Event,
    EventLog,
    IngestResult,
    Rejected,
    TornRecordWarning,
    events_from_frame,
    events_to_frame,
    validate_event,
)
from recsys.features.ingest import (
    ConsentRegistry,
    ConsentUnavailableError,
    ForgetResult,
    Ingestor,
    RedisConsentRegistry,
    replay,
)
from recsys.features.offline import (
    OfflineFeatures,
    build_offline_features,
    point_in_time_features,
)
from recsys.features.store import (
    InProcessStore,
    OnlineStore,
    RedisStore,
    StoreUnavailableError,
    UserProfile,
    profile_to_query,
)

__all__ = [
    "FEATURES",
    "ConsentRegistry",
    "ConsentUnavailableError",
    "Event",
    "EventLog",
    "FeatureConfig",
    "FeatureDef",
    "ForgetResult",
    "InProcessStore",
    "IngestResult",
    "Ingestor",
    "ItemInfo",
    "ItemInfoCatalog",
    "OfflineFeatures",
    "OnlineStore",
    "RedisConsentRegistry",
    "RedisStore",
    "Rejected",
    "StoreUnavailableError",
    "TornRecordWarning",
    "UserProfile",
    "UserState",
    "age_band",
    "build_offline_features",
    "derive_context",
    "events_from_frame",
    "events_to_frame",
    "feature_names",
    "fold_events",
    "fold_user",
    "item_features",
    "merge_history",
    "point_in_time_features",
    "profile_to_query",
    "replay",
    "user_contexts",
    "user_features",
    "validate_event",
]
