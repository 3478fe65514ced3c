"""Typed failures of the crypto layer, each with a stable code and a message in Chinese and English.

Every security decision that fails raises one of these; nothing returns ``False`` for a caller
to forget (pyca/cryptography's habit). The CLI prints ``ERROR <code>: <zh> / <en>``; the server
maps the same code to its JSON error body.
"""

from __future__ import annotations


class BidBridgeError(Exception):
    """Base of every typed BidBridge failure."""

    code: str = "INTERNAL"
    zh: str = "内部错误"
    en: str = "internal error"

    def __init__(self, detail: str | None = None) -> None:
        self.detail = detail
        super().__init__(self.line())

    def line(self) -> str:
        """One line for a person: code, Chinese, English, and the detail if any."""
        text = f"{self.code}: {self.zh} / {self.en}"
        if self.detail:
            text += f" ({self.detail})"
        return text


# --- envelopes -------------------------------------------------------------------------------


class EnvelopeError(BidBridgeError):
    code = "ENVELOPE_ERROR"
    zh = "投标文件信封错误"
    en = "bid envelope error"


class EnvelopeMalformed(EnvelopeError):
    code = "ENVELOPE_MALFORMED"
    zh = "文件不是完整有效的 CMS 加密信封（可能已损坏或被截断）"
    en = "the file is not a complete, well-formed CMS envelope (damaged or truncated?)"


class EnvelopeNotEncrypted(EnvelopeError):
    code = "ENVELOPE_NOT_ENCRYPTED"
    zh = "文件未加密：请使用投标工具对投标文件签名并加密后再上传"
    en = "the file is not encrypted: sign and seal the bid with the sealing tool before uploading"


class AlgorithmUnsupported(EnvelopeError):
    code = "ALGORITHM_UNSUPPORTED"
    zh = "信封使用了不支持的算法"
    en = "the envelope uses an unsupported algorithm"


class NotARecipient(EnvelopeError):
    code = "ENVELOPE_NOT_FOR_RECIPIENT"
    zh = "该投标文件不是用此证书加密的：请用本单位已登记的加密证书重新加密"
    en = "the bid was not sealed for this certificate: seal it again with your registered encryption certificate"


class KeyUnwrapFailed(EnvelopeError):
    code = "KEY_UNWRAP_FAILED"
    zh = "无法用此私钥解开内容加密密钥：请确认使用了与加密证书配对的 CA 锁"
    en = "the content-encryption key could not be unwrapped: use the key that pairs with the encryption certificate"


class EnvelopeTampered(EnvelopeError):
    code = "ENVELOPE_TAMPERED"
    zh = "密文完整性校验失败：文件已被改动或损坏"
    en = "ciphertext integrity check failed: the file was changed or damaged"


# --- signatures ------------------------------------------------------------------------------


class SignatureError(BidBridgeError):
    code = "SIGNATURE_ERROR"
    zh = "签名错误"
    en = "signature error"


class ContentNotSigned(SignatureError):
    code = "CONTENT_NOT_SIGNED"
    zh = "解密后的内容没有投标人签名"
    en = "the decrypted content carries no signature of the bidder"


class SignatureInvalid(SignatureError):
    code = "SIGNATURE_INVALID"
    zh = "签名验证失败：签名后的内容已被改动"
    en = "signature verification failed: the signed content was changed"


class SignerNotBidder(SignatureError):
    code = "SIGNER_NOT_BIDDER"
    zh = "签名人不是投标人本单位"
    en = "the signer is not the bidder"


# --- certificates ----------------------------------------------------------------------------


class CertificateError(BidBridgeError):
    code = "CERT_INVALID"
    zh = "证书无效"
    en = "certificate is not valid"


class UnknownIssuer(CertificateError):
    code = "CERT_UNKNOWN_ISSUER"
    zh = "证书的签发机构不在本平台信任的 CA 列表中"
    en = "the certificate's issuer is not among the CAs this platform trusts"


class CertificateExpired(CertificateError):
    code = "CERT_EXPIRED"
    zh = "证书已过期：请到 CA 机构办理证书更新"
    en = "the certificate has expired: renew it with your CA"


class CertificateNotYetValid(CertificateError):
    code = "CERT_NOT_YET_VALID"
    zh = "证书尚未生效"
    en = "the certificate is not yet valid"


class CertificateRevoked(CertificateError):
    code = "CERT_REVOKED"
    zh = "证书已被吊销"
    en = "the certificate has been revoked"


class RevocationUnknown(CertificateError):
    code = "CERT_REVOCATION_UNKNOWN"
    zh = "无法确认证书吊销状态（缺少有效的 CRL）"
    en = "the certificate's revocation status cannot be established (no valid CRL)"


class WrongKeyUsage(CertificateError):
    code = "CERT_WRONG_USAGE"
    zh = "证书用途不符：签名须用签名证书，加密须用加密证书"
    en = "wrong certificate purpose: sign with the signing certificate, encrypt with the encryption certificate"


class BadCertificateSignature(CertificateError):
    code = "CERT_BAD_SIGNATURE"
    zh = "证书签名无效：证书已被篡改或伪造"
    en = "the certificate's signature is invalid: it was altered or forged"


class BrokenChain(CertificateError):
    code = "CERT_CHAIN_BROKEN"
    zh = "证书链不完整或不合规"
    en = "the certificate chain is incomplete or violates its constraints"


# --- packages --------------------------------------------------------------------------------


class PackageError(BidBridgeError):
    code = "PACKAGE_INVALID"
    zh = "投标文件包无效"
    en = "the bid package is not valid"


class SummaryInvalid(PackageError):
    code = "SUMMARY_INVALID"
    zh = "summary.json 缺失或不符合投标摘要格式"
    en = "summary.json is missing or does not match the bid-summary format"


class ManifestMismatch(PackageError):
    code = "MANIFEST_MISMATCH"
    zh = "manifest.json 与文件包内容不一致"
    en = "manifest.json does not match the package's files"


class OutputExists(PackageError):
    code = "OUTPUT_EXISTS"
    zh = "输出位置已存在，为免覆盖已拒绝：请换一个输出路径"
    en = "the output path already exists and is not overwritten: choose another output path"


class FileUnreadable(BidBridgeError):
    code = "FILE_IO_ERROR"
    zh = "文件读写失败"
    en = "a file could not be read or written"


# --- keys and tokens -------------------------------------------------------------------------


class KeyLoadFailed(BidBridgeError):
    code = "KEY_LOAD_FAILED"
    zh = "无法读取私钥或证书"
    en = "the private key or certificate could not be read"


class KeyCertificateMismatch(KeyLoadFailed):
    code = "KEY_CERT_MISMATCH"
    zh = "私钥与证书不匹配"
    en = "the private key does not belong to the certificate"


class TokenError(BidBridgeError):
    code = "TOKEN_ERROR"
    zh = "CA 锁（PKCS#11 设备）操作失败"
    en = "the CA token (PKCS#11 device) operation failed"


class TokenNotFound(TokenError):
    code = "TOKEN_NOT_FOUND"
    zh = "未找到 CA 锁或其中的密钥：请插入 CA 锁并检查设置"
    en = "the CA token or the key on it was not found: insert the token and check the settings"


class TokenPinIncorrect(TokenError):
    code = "TOKEN_PIN_INCORRECT"
    zh = "CA 锁密码错误"
    en = "the token PIN is incorrect"


# --- quorum backup key -----------------------------------------------------------------------


class QuorumError(BidBridgeError):
    code = "QUORUM_ERROR"
    zh = "备用解密密钥份额错误"
    en = "backup key share error"


class QuorumInsufficientShares(QuorumError):
    code = "QUORUM_INSUFFICIENT_SHARES"
    zh = "备用密钥份额不足，无法恢复"
    en = "too few backup key shares to rebuild the key"


class QuorumRebuildFailed(QuorumError):
    code = "QUORUM_REBUILD_FAILED"
    zh = "备用密钥恢复失败：有份额错误或不属于此密钥"
    en = "the backup key could not be rebuilt: a share is wrong or belongs to another key"
