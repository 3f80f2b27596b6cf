"""The Glance index (LanceDB): its schema (store/schema.py) and the Store class (store/db.py), which owns every
query string the project sends to LanceDB."""
# ruff: noqa: F401, I001 - the package's public names, grouped by module
from .db import (Store, StoreError, build_command, check_preprocessing, db_location, default_db_path,
                 delete_in, lance_errors, newer_glance_message,
                 no_index_message, upsert)
from .reading import ROW_ID, FolderScope, PhotoFilter, photo_where, vector_matrix
from .schema import (CAPTION_DIM, CAPTION_MODEL, CAPTION_VECTOR, CAPTIONS, CONTENT_SOURCES, DIM,
                     ENCODER_KEYS, IMAGES, KEEP_OLD_VERSIONS, LAST_INDEXED, META, META_SCHEMA,
                     MODEL_KEYS, MODEL_VERSION, PREPROCESS_VERSION_KEY, ROOTS, SCHEMA_VERSION, SCHEMA_VERSION_KEY,
                     SNAPSHOT, SOURCE_EXIF, SOURCE_FILE, SOURCE_SIDECAR, SOURCE_XMP, TEXT_MODEL, TUNING, VECTOR_INDEX,
                     VECTOR_INDEX_KINDS, VECTOR_INDEX_MIN_ROWS, VECTOR_INDEX_REBUILD_GROWTH, VECTOR_INDEX_ROWS,
                     VECTOR_INDEX_TRAIN_ROWS, VISION_MODEL, caption_id, captions_schema,
                     display_name, image_id, images_schema, name_bytes, os_relpath, vector_type)
from .sql import sql_in, sql_string
