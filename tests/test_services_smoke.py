from pathlib import Path

import boto3
import requests


def test_moto_server_serves_s3_with_conditional_writes(moto_server):
    s3 = boto3.client(
        "s3",
        endpoint_url=moto_server.url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    s3.create_bucket(Bucket="smoke")
    s3.put_object(Bucket="smoke", Key="k", Body=b"1", IfNoneMatch="*")
    try:
        s3.put_object(Bucket="smoke", Key="k", Body=b"2", IfNoneMatch="*")
    except s3.exceptions.ClientError as e:
        assert e.response["Error"]["Code"] == "PreconditionFailed"
    else:
        raise AssertionError("second If-None-Match put must be refused")
    assert s3.get_object(Bucket="smoke", Key="k")["Body"].read() == b"1"


def test_cosmosdb_server_answers_account_read(cosmosdb_server):
    r = requests.get(cosmosdb_server.url + "/", verify=False, timeout=10)
    assert r.status_code == 200
    assert "writableLocations" in r.json() or "id" in r.json()


def test_local_ca_served_https_is_trusted_by_bundle(local_ca):
    from http.server import BaseHTTPRequestHandler

    from sandbox.doubles.server import ServedDouble

    class Hello(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"hi")

        def log_message(self, *a):
            pass

    with ServedDouble(Hello, state=None, ca=local_ca) as d:
        assert requests.get(d.url, verify=str(local_ca.bundle_file), timeout=5).text == "hi"


def test_test_module_names_are_unique_across_folders():
    """pytest imports test modules by basename (rootdir, no packages): two folders sharing a name break collection."""
    from collections import Counter

    names = Counter(p.name for p in Path(__file__).parent.rglob("test_*.py"))
    assert [n for n, count in names.items() if count > 1] == []
