"""Local stand-ins for AWS: moto's S3 server and gtbot's own Ground Truth emulator."""
