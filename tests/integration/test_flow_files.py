"""The flow files bucket: provisioned from the template as deployed, and where EXPORT TO PDF documents go."""

from __future__ import annotations

import boto3

from herald.flows.pdf import pdf_context, pdf_key, render_pdf, store_pdf
from herald.store import files
from tests.harness import Herald


def test_the_bucket_is_provisioned_private_encrypted_and_expiring_exports(herald: Herald) -> None:
    s3 = boto3.client("s3")
    name = herald.template.physical_name("FlowFilesBucket")
    api = next(f for f in herald.template.functions() if f.logical_id == "ApiFunction")
    assert api.environment["FLOW_FILES_BUCKET"] == name
    encryption = s3.get_bucket_encryption(Bucket=name)["ServerSideEncryptionConfiguration"]["Rules"]
    assert encryption[0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    block = s3.get_public_access_block(Bucket=name)["PublicAccessBlockConfiguration"]
    assert block == {
        k: True for k in ("BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy", "RestrictPublicBuckets")
    }
    ownership = s3.get_bucket_ownership_controls(Bucket=name)["OwnershipControls"]["Rules"]
    assert ownership == [{"ObjectOwnership": "BucketOwnerEnforced"}]
    [rule] = s3.get_bucket_lifecycle_configuration(Bucket=name)["Rules"]
    assert rule["Filter"]["Prefix"] == "exports/"
    assert rule["Expiration"]["Days"] == 30
    assert rule["Status"] == "Enabled"


def test_a_rendered_pdf_is_stored_under_its_step_visit_key_idempotently(herald: Herald) -> None:
    name = herald.template.physical_name("FlowFilesBucket")
    files.configure(name)
    contact = {"contact_id": "c1", "first_name": "Ada", "attributes": {}}
    data = render_pdf("Dear {{ contact.first_name }}", pdf_context(contact, "f1", "Flow"))
    key = pdf_key("f1", "root1", 3, "letter", "c1")
    assert store_pdf(key, data) == key
    assert store_pdf(key, render_pdf("Dear {{ contact.first_name }}", pdf_context(contact, "f1", "Flow"))) == key
    s3 = boto3.client("s3")
    listed = s3.list_objects_v2(Bucket=name, Prefix="flows/f1/pdf/")["Contents"]
    assert [o["Key"] for o in listed] == ["flows/f1/pdf/root1/0003-letter/c1.pdf"]
    stored = s3.get_object(Bucket=name, Key=key)
    assert stored["ContentType"] == "application/pdf"
    assert stored["ServerSideEncryption"] == "AES256"
    assert stored["Body"].read() == data
