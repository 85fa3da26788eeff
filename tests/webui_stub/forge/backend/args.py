"""backend/args.py: dynamic_args, a dict the loader reads."""
dynamic_args = {"forge_unet_storage_dtype": None, "embedding_dir": None, "emphasis_name": None, "online_lora": False}
